"""Start-up mistakes against real parts (a plain redis-server, closed ports, real upstreams): `bff serve`
refuses with one line naming the variable to fix, `bff check` reports a failed or warning check line,
and neither prints a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.app import create_app
from bff.resources import check_parts
from tests.conftest import make_settings
from tests.support.servers import RedisServer, first_answer, free_port, serve


def _env(**settings: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    return {**clean, **settings}


def _bff(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bff", *args], env=_env(**settings), capture_output=True, text=True, timeout=60
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal: the process's only output line, no traceback."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout + result.stderr
    assert "Traceback" not in lines[0]
    return lines[0]


def test_serve_refuses_a_cluster_url_to_a_plain_redis(redis_server: RedisServer) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    result = _bff("serve", "--port", str(free_port()), BFF_SESSION_STORE=url)
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith(f"bff: cannot start: BFF_SESSION_STORE ({url}): ")
    assert "not a Redis Cluster" in line and "redis://host:port/0" in line


@pytest.mark.parametrize(
    "store", ["redis://:hunter2@127.0.0.1:{port}/0", "redis+cluster://127.0.0.1:{port}"], ids=["redis", "cluster"]
)
def test_serve_refuses_an_unreachable_store_without_echoing_its_password(store: str) -> None:
    url = store.format(port=free_port())
    result = _bff("serve", "--port", str(free_port()), BFF_SESSION_STORE=url)
    assert result.returncode == 2
    line = _one_line(result)
    assert "BFF_SESSION_STORE" in line and "unreachable" in line
    assert "hunter2" not in line


def _readyz_of_a_started_server(args: list[str], env: dict[str, str]) -> tuple[httpx.Response, str]:
    """Start ``bff serve`` with ``args``, wait for it to answer /readyz, stop it: (that answer, its output)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bff", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = first_answer(proc, lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5))
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    return ready, output


def test_serve_starts_when_the_identity_provider_cannot_be_discovered(redis_server: RedisServer) -> None:
    """An IdP that does not answer at start may be a passing outage: `bff serve` says so in one line
    naming the variable and starts anyway (a fleet restarted during an IdP outage must still serve the
    sessions whose tokens are valid); /readyz is 503 until the IdP answers."""
    # nothing listens there; then a port that answers, but not HTTP (the Redis server)
    for issuer in (f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{redis_server.port}"):
        env = _env(
            BFF_OIDC_ISSUER=issuer,
            BFF_OIDC_CLIENT_ID="bff",
            BFF_OIDC_CLIENT_SECRET="top-secret-value",
            BFF_OIDC_TIMEOUT_SECONDS="1",
            BFF_SESSION_SECRET="test-secret-0123456789abcdef",
        )
        ready, output = _readyz_of_a_started_server([], env)
        assert ready.status_code == 503
        first = output.splitlines()[0]
        assert first.startswith(f"bff: warning: BFF_OIDC_ISSUER ({issuer}): identity provider"), output
        assert "top-secret-value" not in output and "Traceback" not in output


def test_serve_can_start_without_its_parts_when_told(redis_server: RedisServer) -> None:
    """``--skip-startup-checks``: it serves, and /readyz says what is missing."""
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    ready, output = _readyz_of_a_started_server(["--skip-startup-checks"], _env(BFF_SESSION_STORE=url))
    assert ready.status_code == 503
    assert any("not a Redis Cluster" in reason for reason in ready.json()["reasons"])
    assert "Traceback" not in output
    # the start-up report: one warning line for the store, naming the variable
    store_lines = [line for line in output.splitlines() if "session store:" in line]
    assert len(store_lines) == 1, output
    assert "BFF_SESSION_STORE" in store_lines[0]


def test_uvicorn_factory_with_a_cluster_url_to_a_plain_redis_starts_and_says_why(redis_server: RedisServer) -> None:
    """Without `bff serve`'s refusal (uvicorn --factory), the lifespan no longer dies in a traceback:
    the server starts, one start-up line names the variable, and a misspelt variable gets a "did you mean"."""
    port = free_port()
    env = _env(
        BFF_SESSION_STORE=f"redis+cluster://127.0.0.1:{redis_server.port}",
        BFF_SESION_SECRET="x",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "bff.app:app_from_env", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        time.sleep(0.5)  # the start-up report runs in the background
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    assert "Traceback" not in output
    assert "Application startup failed" not in output
    store_lines = [line for line in output.splitlines() if "session store:" in line]
    assert len(store_lines) == 1, output
    assert "not a Redis Cluster" in store_lines[0] and "BFF_SESSION_STORE" in store_lines[0]
    assert (
        "BFF_SESION_SECRET is not a setting (misspelt?): it configures nothing; did you mean BFF_SESSION_SECRET?"
        in output
    )


def test_check_reports_a_cluster_url_to_a_plain_redis_as_a_failed_check(redis_server: RedisServer) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    result = _bff("check", "--timeout", "2", BFF_SESSION_STORE=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "session store:" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"  [FAIL] session store: {url}: session store is not a Redis Cluster")
    assert lines[0].endswith("check BFF_SESSION_STORE")


def _status_app() -> Starlette:
    """An upstream whose base URL answers the status its path names: /s/404 answers 404."""

    async def status(request: Request) -> Response:
        return JSONResponse({}, status_code=int(request.path_params["code"]))

    return Starlette(routes=[Route("/s/{code:int}", status, methods=["GET"])])


async def test_upstream_answers_are_ok_or_warnings_by_status() -> None:
    async with serve(_status_app()) as base:
        codes = [200, 302, 401, 403, 405, 400, 404, 410, 500, 503]
        settings = make_settings(upstreams={f"u{code}": {"url": f"{base}/s/{code}"} for code in codes})
        app = create_app(settings)
        async with serve(app):
            checks = {check.part: check for check in await check_parts(app.state.resources)}
    for code in (200, 302, 401, 403, 405):
        assert checks[f"upstream u{code}"].status == "ok", checks[f"upstream u{code}"]
    for code in (400, 404, 410):
        check = checks[f"upstream u{code}"]
        assert check.ok and check.status == "warn"
        assert (
            check.detail == f"{base}/s/{code} answered HTTP {code} at its base URL: check BFF_UPSTREAMS__U{code}__URL"
        )
    for code in (500, 503):
        assert checks[f"upstream u{code}"].status == "warn"
        assert "reachable but failing" in checks[f"upstream u{code}"].detail


async def test_check_prints_a_404_upstream_as_a_warning() -> None:
    async with serve(_status_app()) as base:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bff",
            "check",
            "--timeout",
            "2",
            env=_env(BFF_UPSTREAMS__ACCOUNTS__URL=f"{base}/s/404", BFF_UPSTREAMS__CATALOG__URL=f"{base}/s/200"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert f"  [warn] upstream accounts: {base}/s/404 answered HTTP 404 at its base URL" in output
    assert f"  [ok] upstream catalog: {base}/s/200 answered HTTP 200" in output
    assert "[ok] upstream accounts" not in output
