# syntax=docker/dockerfile:1
# The bff image: `docker build -t bff .` serves the demo API; a team's image starts FROM it, installs
# its own package and names its schema (see examples/team/Dockerfile):
#   FROM bff
#   COPY . /src/app
#   RUN pip install --no-cache-dir /src/app
#   ENV BFF_SCHEMA=team_bff.schema:schema
# Pin the base image by digest in production (python:3.11-slim@sha256:...), as your registry
# resolves it; the digest is not pinned here because this project's build machines cannot reach
# a container registry to read it.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# the pinned dependency set, OpenTelemetry included (scripts/lock), then bff itself
COPY requirements/runtime.lock ./requirements/runtime.lock
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY bff ./bff
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 bff
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl && rm -rf /wheels
USER bff
ENV BFF_ENV=production
# package.module:attribute of the schema to serve (a schema built with bff.build_schema)
ENV BFF_SCHEMA=bff.demo.api:schema
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["bff", "serve", "--host", "0.0.0.0", "--port", "8000"]
