#!/usr/bin/env python
"""bff's OpenAPI sources side by side with GraphQL Mesh (issue 28), on the same document and the same
running upstream.

The CPU run (the default) starts the pets service of ``tests/sources/services.py`` (or the FastAPI
inventory service) in a process of its own, seeded with ``--seed`` more pets (or items); `bff serve`
with no schema of its own (the source alone: ``BFF_UPSTREAMS__PETS__OPENAPI``, ``__ANONYMOUS=none``
so no sign-in is needed, ``BFF_ENV=production``, 1 worker); and the Mesh server of ``bench/mesh``
(``@omnigraph/openapi`` on graphql-yoga, ``NODE_ENV=production``, Mesh's own fetch: ``--mesh``
chooses others). Every server's answer to every query is compared first; then `wrk` (one thread, 16
connections, a Lua check counting non-200 answers and answers with ``errors`` as errors) drives each
server in turn, the order rotating every round. CPU ms per request = the server process's user+system
CPU time from /proc / requests served (the upstream's apart); ``--profile`` runs py-spy on bff under
each query afterwards.

The mapping run (``--mapping``) cuts ``bench/mesh/constructs.yaml`` (and its 3.0 twin) into one
document per construct, has both generate a schema from each, and prints a markdown table of what
each maps the construct to (an SDL excerpt: the root fields and every type they reach) and what each
refused or warned about; ``--answers`` adds what each answers over a service sending fixed JSON.

    python scripts/bench_sources.py --rounds 5 --profile 8      # pets; 5 s runs
    python scripts/bench_sources.py --service inventory --rounds 5
    python scripts/bench_sources.py --mesh whatwg=whatwg --mesh agent=agent --mesh native=native
    python scripts/bench_sources.py --mapping --answers
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import datetime as dt
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import ROOT, bff_serve, cpu_seconds, stop_all, wait_http, wrk_stats

from tests.support.servers import free_port

MESH_DIR = ROOT / "bench" / "mesh"
SPECS = ROOT / "tests" / "sources" / "specs"
CONNECTIONS = 16


@dataclass(frozen=True)
class Service:
    """An upstream of tests/sources/services.py, its document and the queries: one text for both
    servers, or (bff's, Mesh's) where Mesh's schema differs."""

    name: str
    spec: str | None  # a path; None: the service's own /openapi.json
    base_path: str  # the document's relative server path (Mesh takes the full endpoint)
    queries: dict[str, str | tuple[str, str]]

    def query(self, label: str, bff: bool) -> str:
        text = self.queries[label]
        return text if isinstance(text, str) else text[0 if bff else 1]


PET_FIELDS = "id createdAt name tag status owner { first_name ids } photos { url width }"
ITEM_FIELDS = "sku title color tags dimensions { width height } updated stock"
SERVICES = {
    "pets": Service(
        "pets",
        str(SPECS / "pets.yaml"),
        "/v1",
        {
            "list": f"{{ listPets {{ {PET_FIELDS} }} }}",
            "two-roots": (
                "{ get_pet(petId: 1) { id name status owner { first_name ids } photos { url width } } "
                'ownerAnimals(ownerId: "ann") { __typename ... on Dog { name barks } ... on Cat { name lives } } }'
            ),
            # diagnostic: two root fields of object type only (bff's compiled plan does not take a union)
            "two-roots-no-union": (
                "{ get_pet(petId: 1) { id name status owner { first_name ids } photos { url width } } "
                "listPets(limit: 2) { id name } }"
            ),
        },
    ),
    "inventory": Service(
        "inventory",
        None,
        "",
        {
            # Mesh types FastAPI's answers as a union with the 422 answer's HTTPValidationError
            "list": (
                f"{{ listItems(limit: 100) {{ {ITEM_FIELDS} }} }}",
                f"{{ listItems(limit: 100) {{ ... on Item {{ {ITEM_FIELDS} }} }} }}",
            ),
            "two-roots": (
                f'{{ a: getItem(sku: "a-1") {{ {ITEM_FIELDS} }} b: getItem(sku: "b-2") {{ {ITEM_FIELDS} }} }}',
                f'{{ a: getItem(sku: "a-1") {{ ... on Item {{ {ITEM_FIELDS} }} }} '
                f'b: getItem(sku: "b-2") {{ ... on Item {{ {ITEM_FIELDS} }} }} }}',
            ),
        },
    ),
}


# -- the upstream, in a process of its own -------------------------------------------------------


def serve_upstream(name: str, port: int) -> None:
    """The service ``name`` of tests/sources/services.py on ``port`` (uvicorn, uvloop, httptools),
    counting its requests at ``/__count`` (its own record of calls kept short: a long run would grow it)."""
    import uvicorn

    from tests.sources.services import Calls, inventory_app, pets_app

    calls = Calls()
    calls.seen = collections.deque(maxlen=100)  # type: ignore[assignment]
    app = {"pets": pets_app, "inventory": inventory_app, "constructs": constructs_app}[name](calls)
    served = [0]

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__count":
            body = str(served[0]).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            served[0] += 1
        await app(scope, receive, send)

    uvicorn.run(counting, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop")


#: what the constructs service answers (bench/mesh/constructs.yaml), by path under /api
CONSTRUCT_ANSWERS: dict[str, Any] = {
    "/one-of": [{"kind": "dog", "barks": True}, {"kind": "cat", "lives": 9}],
    "/any-of": {"contact": {"phone": "+1 555"}, "idOrName": 7},
    "/enums": {"size": "large", "stock": "in-stock", "level": 2},
    "/nullable": {"tag": None, "count": None, "owner": None, "mixed": 3},
    "/numbers": {"big": 9007199254740993, "small": 1, "plain": 2, "ratio": 0.5},
    "/times": {"at": "2026-02-03T04:05:06.123+02:00", "day": "2026-02-03"},
    "/invalid-names": {"first-name": "Ann", "2fa": True, "$type": "x"},
    "/accounts": {"id": "1", "login": "ann", "password": "hunter2"},
    "/external": {"text": "hi", "lang": "en"},
}


def constructs_app(calls: Any) -> Any:
    """bench/mesh/constructs.yaml's service: fixed answers; ``/params`` echoes what it was sent, and
    ``POST /accounts`` the body it received (as the new account's ``id``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def fixed(request: Request) -> Response:
        return JSONResponse(CONSTRUCT_ANSWERS[request.url.path.removeprefix("/api")])

    async def params(request: Request) -> Response:
        sent = f"{request.url.path}?{request.url.query} X-Trace={request.headers.get('x-trace')}"
        return JSONResponse({"url": f"{sent} Cookie={request.headers.get('cookie')}"})

    async def create(request: Request) -> Response:
        return JSONResponse({"id": (await request.body()).decode(), "login": "new"}, status_code=201)

    async def delete(request: Request) -> Response:
        return Response(status_code=204)

    routes = [Route(f"/api{path}", fixed, methods=["GET"]) for path in CONSTRUCT_ANSWERS]
    routes += [
        Route("/api/params/{id}", params, methods=["GET"]),
        Route("/api/accounts", create, methods=["POST"]),
        Route("/api/things/{id}", delete, methods=["DELETE"]),
    ]
    return Starlette(routes=routes)


def seed(service: str, url: str, count: int) -> None:
    """``count`` more pets (each with an owner and two photos) or items, through the service's POST."""
    with httpx.Client(base_url=url, timeout=10) as client:
        if service == "inventory":
            for i in range(count):
                item = {
                    "sku": f"s-{i}",
                    "title": f"Item {i}",
                    "color": None if i % 3 == 0 else ("red", "green")[i % 2],
                    "tags": [f"t{i}", "all"],
                    "dimensions": None if i % 4 == 0 else {"width": i + 0.5, "height": 2.0},
                }
                client.post("/items", json=item).raise_for_status()
            return
        for i in range(count):
            pet = {
                "name": f"Pet {i}",
                "tag": None if i % 3 else f"tag{i}",
                "status": ("available", "pending", "sold")[i % 3],
                "createdAt": f"2026-03-{1 + i % 28:02d}T10:{i % 60:02d}:00Z",
                "owner": None if i % 4 == 0 else {"first-name": f"Owner {i}", "ids": [i, i + 1]},
                "photos": [{"url": f"https://img/{i}/{k}", "width": 320 * (k + 1)} for k in range(2)],
            }
            client.post("/v1/pets", json=pet).raise_for_status()


def upstream_count(url: str) -> int:
    return int(httpx.get(f"{url}/__count", timeout=5).text)


# -- the load -------------------------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-200 answers and answers with "errors"


def wrk(url: str, query: str, headers: dict[str, str], connections: int, duration: float) -> Run:
    """One wrk run checking every answer (`benchkit.wrk_stats`)."""
    return Run(*wrk_stats(url, query, headers, connections, duration))


# -- the servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str  # its /graphql


def ensure_mesh_installed() -> None:
    if not (MESH_DIR / "node_modules" / "@omnigraph" / "openapi").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=MESH_DIR, check=True)


def start_mesh(spec: str, endpoint: str, name: str, fetch: str = "whatwg", label: str = "mesh") -> Server:
    port = free_port()
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PORT": str(port),
        "MESH_SOURCE": spec,
        "MESH_ENDPOINT": endpoint,
        "MESH_NAME": name,
        "MESH_FETCH": fetch,
    }
    process = subprocess.Popen(["node", "server.mjs"], cwd=MESH_DIR, env=env, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/graphql")
    return Server(label, process, f"http://127.0.0.1:{port}/graphql")


def start_bff(service: Service, upstream_url: str, spec: str) -> Server:
    port = free_port()
    prefix = f"BFF_UPSTREAMS__{service.name.upper()}__"
    settings = {
        "BFF_ENV": "production",
        "BFF_SESSION_SECRET": "s" * 48,
        f"{prefix}URL": upstream_url,
        f"{prefix}OPENAPI": spec,
        f"{prefix}ANONYMOUS": "none",
    }
    process = bff_serve(port, settings)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return Server("bff", process, f"http://127.0.0.1:{port}/graphql")


HEADERS = {"X-CSRF": "1"}  # bff's CSRF header for a POST (ignored by Mesh)


def answer(url: str, query: str) -> Any:
    response = httpx.post(url, json={"query": query}, headers=HEADERS, timeout=10)
    return response.json()


def normalized(value: Any) -> Any:
    """An answer with every ISO 8601 date-time as the instant it names (Mesh's DateTime reprints an
    upstream's ``+02:00`` as UTC with milliseconds; bff serves the upstream's own text)."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str) and len(value) >= 20 and value[4:5] == "-" and "T" in value:
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return value


# -- the CPU run -----------------------------------------------------------------------------------


@dataclass
class Sample:
    result: Run
    cpu_ms: float
    upstream_cpu_ms: float
    upstream_calls: float  # upstream requests per GraphQL request


def measure_once(
    server: Server, upstream: subprocess.Popen[bytes], upstream_url: str, query: str, duration: int
) -> Sample:
    calls_before = upstream_count(upstream_url)
    before, upstream_before = cpu_seconds(server.process.pid), cpu_seconds(upstream.pid)
    result = wrk(server.url, query, HEADERS, CONNECTIONS, duration)
    used, upstream_used = cpu_seconds(server.process.pid) - before, cpu_seconds(upstream.pid) - upstream_before
    served = max(1, result.requests)
    calls = upstream_count(upstream_url) - calls_before - 1  # the count's own request is counted
    return Sample(result, 1000 * used / served, 1000 * upstream_used / served, calls / served)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds(pids: list[int]) -> float:
    """CPU seconds of this script, its finished children (the wrk runs) and the processes ``pids``."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system + sum(map(cpu_seconds, pids))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def run_cpu(args: argparse.Namespace) -> int:
    service = SERVICES[args.service]
    ensure_mesh_installed()
    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bff-bench-sources-"))
    load_start = os.getloadavg()
    try:
        port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-upstream", service.name, "--port", str(port)]
        )
        procs.append(upstream)
        upstream_url = f"http://127.0.0.1:{port}"
        wait_http(f"{upstream_url}/__count")
        seed(service.name, upstream_url, args.seed)
        spec = service.spec or f"{upstream_url}/openapi.json"
        # `python -m bff` puts its working directory first on sys.path: run it from one without bff
        os.chdir(workdir)
        servers = [start_bff(service, upstream_url, spec)]
        procs.append(servers[0].process)
        for label, fetch in args.mesh:
            servers.append(start_mesh(spec, upstream_url + service.base_path, service.name, fetch, label))
            procs.append(servers[-1].process)
        print(f"# {service.name}: upstream {upstream_url}; " + ", ".join(f"{s.name} {s.url}" for s in servers))
        for label in service.queries:
            answers = [answer(s.url, service.query(label, s is servers[0])) for s in servers]
            same = all(normalized(answers[0]) == normalized(other) for other in answers[1:])
            print(f"# {label}: answers {'equal' if same else 'DIFFER'} (date-times compared as instants)")
            if not same or "errors" in answers[0]:
                for s, a in zip(servers, answers, strict=True):
                    print(f"#   {s.name}: {json.dumps(a)[:600]}")
        for s in servers:
            for label in service.queries:
                wrk(s.url, service.query(label, s is servers[0]), HEADERS, CONNECTIONS, args.warmup)
        samples: dict[tuple[str, str], list[Sample]] = {}
        pids = [p.pid for p in procs]
        started, busy, own = time.monotonic(), machine_busy_seconds(), own_seconds(pids)
        for round_ in range(args.rounds):
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for server in order:
                for label in service.queries:
                    query = service.query(label, server is servers[0])
                    sample = measure_once(server, upstream, upstream_url, query, args.duration)
                    samples.setdefault((label, server.name), []).append(sample)
                    r = sample.result
                    print(
                        f"# round {round_ + 1} {label} {server.name}: {r.rps:.0f} req/s, {sample.cpu_ms:.3f} CPU ms/req,"
                        f" p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, {r.errors} errors",
                        flush=True,
                    )
        # the CPU that processes other than this run's used meanwhile, per second: the machine's load by others
        others = (machine_busy_seconds() - busy - (own_seconds(pids) - own)) / (time.monotonic() - started)
        for label in service.queries if args.profile else ():
            profile(servers[0], label, service.query(label, True), args.profile, workdir)
    finally:
        stop_all(procs)
        os.chdir(ROOT)
        shutil.rmtree(workdir, ignore_errors=True)
    print_cpu_table(args, service, [s.name for s in servers], samples, load_start, others)
    return 0


def print_cpu_table(
    args: argparse.Namespace,
    service: Service,
    names: list[str],
    samples: dict[tuple[str, str], list[Sample]],
    load_start: tuple[float, ...],
    others: float,
) -> None:
    reference = names[1]
    lines = [
        "",
        f"{service.name}, {CONNECTIONS} connections, {args.rounds} rounds of {args.duration} s, the order rotating "
        f"every round; median (min-max over the rounds); the ratio to {reference}'s CPU is paired round by round",
        "",
        f"| query | server | CPU ms/req | / {reference} CPU | req/s | p50 ms | p99 ms | errors | upstream calls/req "
        "| upstream CPU ms/req |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in service.queries:
        mesh = samples[(label, reference)]
        for name in names:
            runs = samples[(label, name)]
            ratio = spread([b.cpu_ms / m.cpu_ms for b, m in zip(runs, mesh, strict=True)]) if name != reference else ""
            lines.append(
                f"| {label} | {name} | {spread([s.cpu_ms for s in runs])} | {ratio} "
                f"| {statistics.median(s.result.rps for s in runs):.0f} "
                f"| {spread([s.result.p50_ms for s in runs])} | {spread([s.result.p99_ms for s in runs])} "
                f"| {sum(s.result.errors for s in runs)} | {statistics.median(s.upstream_calls for s in runs):.2f} "
                f"| {statistics.median(s.upstream_cpu_ms for s in runs):.2f} |"
            )
    load_end = os.getloadavg()
    lines += [
        "",
        f"load average at the start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
        f"at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} (the run's own processes included); "
        f"other processes used {others:.2f} CPU-seconds per second (of {os.cpu_count()} cores) during the rounds; "
        f"{versions()}",
    ]
    print("\n".join(lines))


def versions() -> str:
    lock = json.loads((MESH_DIR / "package-lock.json").read_text())["packages"]
    mesh = ", ".join(
        f"{name} {lock[f'node_modules/{name}']['version']}"
        for name in ("@omnigraph/openapi", "graphql-yoga", "graphql")
    )
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk_line = (wrk_version.stdout or wrk_version.stderr).splitlines()[0].split(" [")[0] if wrk_version else "wrk"
    from importlib.metadata import version

    return (
        f"Python {platform.python_version()}, strawberry-graphql {version('strawberry-graphql')}, "
        f"graphql-core {version('graphql-core')}, Node {node}, {mesh}, {wrk_line}, {os.cpu_count()} cores"
    )


def profile(server: Server, label: str, query: str, seconds: int, workdir: Path) -> None:
    """py-spy on bff (its worker included) while wrk drives ``query``: the frames of bff/sources (the
    generated module and bff/sources/runtime.py) by self and total time, self time by package, and
    the top self frames; samples aggregated by function."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("# py-spy is not installed (pip install py-spy): no profile")
        return
    out = workdir / f"profile-{label}.txt"
    spy = subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--function", "--rate", "250"),
            *("--duration", str(seconds), "--format", "raw", "--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    wrk(server.url, query, HEADERS, CONNECTIONS, seconds + 1)
    spy.wait(30)
    if not out.exists():
        print("# py-spy wrote nothing (ptrace refused?)")
        return
    print(f"\n## py-spy on bff, {label} query, {seconds} s under wrk (c={CONNECTIONS})")
    print_profile(out.read_text())


def _package(frame: str) -> str:
    """Where a py-spy frame ``function (path:line)`` is: the generated module, a bff package, else
    the first component of its path (a site-package or the standard library's module)."""
    if "<bff source" in frame:
        return "generated source module"
    path = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    if path.startswith("bff/"):
        return "/".join(path.split("/")[:2]) if path.count("/") > 1 else path
    return path.split("/")[0] or path


def print_profile(raw: str, top: int = 20) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        print("# py-spy: no samples")
        return

    def share(count: int) -> str:
        return f"{100 * count / samples:.1f}"

    packages: collections.Counter[str] = collections.Counter()
    for frame, count in own.items():
        packages[_package(frame)] += count
    print(f"\n{samples} samples (busy threads only). Self time by where the frame is:\n")
    print("| where | self % |\n| --- | ---: |")
    for package, count in packages.most_common(12):
        print(f"| {package} | {share(count)} |")
    print("\n| bff/sources frame | self % | total % |\n| --- | ---: | ---: |")
    ours = [(f, c) for f, c in total.items() if _package(f) in ("generated source module", "bff/sources")]
    for frame, count in sorted(ours, key=lambda fc: -fc[1])[:top]:
        print(f"| `{frame}` | {share(own[frame])} | {share(count)} |")
    print("\n| top self frame | self % |\n| --- | ---: |")
    for frame, count in own.most_common(top):
        print(f"| `{frame}` | {share(count)} |")


# -- the mapping table -----------------------------------------------------------------------------

#: construct, document, the paths cut out of it
ROWS = [
    ("`allOf`", "constructs.yaml", ["/all-of"]),
    ("discriminated `oneOf`", "constructs.yaml", ["/one-of"]),
    ("`anyOf` (of objects; of scalars)", "constructs.yaml", ["/any-of"]),
    ("enums (string, with invalid names, integer)", "constructs.yaml", ["/enums"]),
    ("nullable, 3.0 `nullable: true` (required properties)", "constructs-3.0.yaml", ["/nullable"]),
    ("nullable, 3.1 type arrays, `oneOf` with `null` (required properties)", "constructs.yaml", ["/nullable"]),
    ("arrays of objects", "constructs.yaml", ["/arrays"]),
    ("`int64` (int32, number)", "constructs.yaml", ["/numbers"]),
    ("`date-time`, `date`", "constructs.yaml", ["/times"]),
    ("path, query (array), header, cookie parameters", "constructs.yaml", ["/params/{id}"]),
    ("JSON body (required)", "constructs.yaml", ["/json-body"]),
    ("multipart body", "constructs.yaml", ["/multipart"]),
    ("204 No Content", "constructs.yaml", ["/things/{id}"]),
    ("no `operationId`", "constructs.yaml", ["/no-operation-id/{id}"]),
    (
        "invalid names (`get-first-name`, `first-name`, `2fa`, `$type`, `page-size`)",
        "constructs.yaml",
        ["/invalid-names"],
    ),
    ("`readOnly` / `writeOnly`", "constructs.yaml", ["/accounts"]),
    ("external `$ref` (a file beside the document)", "constructs.yaml", ["/external"]),
    ("callbacks", "constructs.yaml", ["/hooks"]),
]


def mini_documents(into: Path) -> list[Path]:
    """One document per row (its paths and every component), beside a copy of the external file."""
    import yaml  # type: ignore[import-untyped]

    shutil.copy(MESH_DIR / "constructs-external.yaml", into / "constructs-external.yaml")
    paths = []
    for index, (_, document, cut) in enumerate(ROWS):
        full = yaml.safe_load((MESH_DIR / document).read_text())
        mini = copy.deepcopy(full)
        mini["paths"] = {p: full["paths"][p] for p in cut}
        path = into / f"row{index:02d}.json"
        path.write_text(json.dumps(mini))
        paths.append(path)
    for document in ("constructs.yaml", "constructs-3.0.yaml"):
        path = into / document
        path.write_text(json.dumps(yaml.safe_load((MESH_DIR / document).read_text())))
        paths.append(path)
    return paths


def bff_side(path: Path) -> tuple[str | None, list[str], str | None]:
    """bff's schema of one document, the warnings it named, its error. A document with no GET has no
    Query field, which a GraphQL schema needs: it is then mounted again beside a placeholder Query
    (left out of the excerpt) and the refusal alone is reported."""
    import strawberry

    from bff import build_schema
    from bff.graphql.schema import SchemaError
    from bff.sources import openapi

    source = openapi("constructs", str(path))
    warnings: list[str] = []
    try:
        warnings = [w.removeprefix("source 'constructs': ") for w in source.generate().warnings]
        try:
            return build_schema(sources=[source]).as_str(), warnings, None
        except SchemaError as exc:
            if "no source mounted a Query field" not in str(exc):
                raise

            @strawberry.type(name="Query")
            class Placeholder:
                placeholder: bool = False

            sdl = build_schema(Placeholder, sources=[source]).as_str()
            return sdl, [*warnings, f"alone: {exc} (here beside a placeholder Query)"], None
    except Exception as exc:  # what the side refuses is the finding
        return None, warnings, f"{type(exc).__name__}: {exc}"


def mesh_side(paths: list[Path]) -> list[tuple[str | None, list[str], str | None]]:
    out = subprocess.run(
        ["node", "server.mjs", "--print", *map(str, paths)],
        cwd=MESH_DIR,
        env={**os.environ, "MESH_NAME": "constructs", "NODE_ENV": "production"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    found = []
    for line in out.splitlines():
        item = json.loads(line)
        said = [f"{s['level']}: {s['text'].removeprefix('constructs: ')}" for s in item["said"]]
        found.append((item["sdl"], said, item["error"]))
    return found


def excerpt(sdl: str | None) -> list[str]:
    """The root fields of ``sdl`` and every named type they reach, one compact line each."""
    import graphql

    if sdl is None:
        return []
    schema = graphql.build_schema(sdl)
    lines: list[str] = []
    reached: dict[str, Any] = {}

    def reach(kind: Any) -> None:
        named = graphql.get_named_type(kind)
        if named.name in reached or graphql.is_specified_scalar_type(named):
            return
        reached[named.name] = named
        if isinstance(named, (graphql.GraphQLObjectType, graphql.GraphQLInterfaceType)):
            for field in named.fields.values():
                reach(field.type)
                for arg in field.args.values():
                    reach(arg.type)
        elif isinstance(named, graphql.GraphQLInputObjectType):
            for input_field in named.fields.values():
                reach(input_field.type)
        elif isinstance(named, graphql.GraphQLUnionType):
            for member in named.types:
                reach(member)

    def signature(name: str, field: Any) -> str:
        args = ", ".join(f"{a}: {arg.type}" for a, arg in field.args.items())
        return f"{name}({args}): {field.type}" if args else f"{name}: {field.type}"

    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        if root is None:
            continue
        for name, field in root.fields.items():
            if root.name == "Query" and name == "placeholder":
                continue
            lines.append(f"{root.name}.{signature(name, field)}")
            reach(field.type)
            for arg in field.args.values():
                reach(arg.type)
    scalars = []
    for named in reached.values():
        if isinstance(named, graphql.GraphQLScalarType):
            scalars.append(named.name)
        elif isinstance(named, graphql.GraphQLEnumType):
            lines.append(f"enum {named.name} {{ {' '.join(named.values)} }}")
        elif isinstance(named, graphql.GraphQLUnionType):
            lines.append(f"union {named.name} = {' | '.join(t.name for t in named.types)}")
        elif isinstance(named, graphql.GraphQLInputObjectType):
            lines.append(f"input {named.name} {{ {', '.join(f'{n}: {f.type}' for n, f in named.fields.items())} }}")
        else:
            fields = ", ".join(signature(n, f) for n, f in named.fields.items())
            lines.append(f"type {named.name} {{ {fields} }}")
    if scalars:
        lines.append(f"scalar {', '.join(sorted(scalars))}")
    return lines


def cell(lines: list[str], *, code: bool) -> str:
    if not lines:
        return "-"
    parts = [f"`{line}`" if code else line for line in lines]
    return "<br>".join(part.replace("|", "\\|") for part in parts)


def side_cell(sdl: str | None, error: str | None) -> str:
    if error is not None:
        return f"**fails to load**: {error[:300]}"
    lines = excerpt(sdl)
    return cell(lines, code=True) if lines else "**nothing mounted**"


def run_mapping(args: argparse.Namespace) -> int:
    ensure_mesh_installed()
    logging.getLogger("bff.sources").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bff-mapping-") as tmp:
        paths = mini_documents(Path(tmp))
        bff = [bff_side(path) for path in paths]
        mesh = mesh_side(paths)
    lines = [
        "| construct | bff maps it to | bff refuses / warns | Mesh maps it to | Mesh refuses / warns |",
        "| --- | --- | --- | --- | --- |",
    ]
    for index, (label, _, _) in enumerate(ROWS):
        (b_sdl, b_said, b_error), (m_sdl, m_said, m_error) = bff[index], mesh[index]
        lines.append(
            f"| {label} | {side_cell(b_sdl, b_error)} | {cell(b_said, code=False)} "
            f"| {side_cell(m_sdl, m_error)} | {cell(m_said, code=False)} |"
        )
    lines.append("")
    for offset, document in enumerate(("constructs.yaml", "constructs-3.0.yaml")):
        (b_sdl, b_said, b_error), (m_sdl, m_said, m_error) = bff[len(ROWS) + offset], mesh[len(ROWS) + offset]
        counts = []
        for name, sdl, said, error in (("bff", b_sdl, b_said, b_error), ("Mesh", m_sdl, m_said, m_error)):
            if error is not None:
                counts.append(f"{name} fails to load it ({error[:200]})")
            else:
                fields = sum(1 for line in excerpt(sdl) if line.split(".")[0] in ("Query", "Mutation", "Subscription"))
                counts.append(f"{name} mounts {fields} root field(s) and names {len(said)} warning(s)")
            lines.append("")
        lines[-2:] = [f"The whole `bench/mesh/{document}` at once: {'; '.join(counts)}.", ""]
    print("\n".join(lines).rstrip())
    if args.answers:
        run_answers()
    return 0


#: construct, the query sent to bff, the query sent to Mesh (None: the same)
ANSWER_CHECKS: list[tuple[str, str, str | None]] = [
    ("discriminated `oneOf`", "{ discriminatedOneOf { __typename ... on Dog { barks } ... on Cat { lives } } }", None),
    (
        "`anyOf` of objects; of scalars",
        "{ anyOf { contact { __typename ... on Email { email } ... on Phone { phone } } idOrName } }",
        "{ anyOf { contact { email phone } idOrName { String Int } } }",
    ),
    ("enums", "{ enums(size: large) { size stock level } }", None),
    ("3.1 nullable (required, null sent)", "{ nullable31 { tag count owner { url } mixed } }", None),
    ("`int64` past 2^53", "{ int64 { big small ratio } }", None),
    ("`date-time`, `date`", "{ dateTime { at day } }", None),
    (
        "path, query, header, cookie parameters",
        '{ parameters(id: 7, q: "a b", tags: ["x", "y"], X_Trace: "t1") { url } }',
        '{ parameters(id: 7, q: "a b", tags: ["x", "y"], X_Trace: "t1", session: "s1") { url } }',
    ),
    (
        "invalid names",
        "{ get_first_name { first_name _2fa type } }",
        "{ get_first_name { first_name _2fa _DOLLAR_type } }",
    ),
    (
        "`writeOnly` in an answer",
        "{ readOnlyWriteOnlyGet { id login } }",
        "{ readOnlyWriteOnlyGet { id login password } }",
    ),
    (
        "`readOnly` in a body (the upstream echoes the body it got)",
        'mutation { readOnlyWriteOnlyPost(input: {login: "bo", password: "pw"}) { id } }',
        'mutation { readOnlyWriteOnlyPost(input: {id: "forged", login: "bo", password: "pw"}) { id } }',
    ),
    ("204 No Content", 'mutation { noContent(id: "a") }', None),
    ("external `$ref`", "{ externalRef }", "{ externalRef { text lang } }"),
]


def run_answers() -> None:
    """Both servers over the constructs service: what each answers to the same upstream JSON."""
    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bff-answers-"))
    spec = str(MESH_DIR / "constructs.yaml")
    try:
        port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-upstream", "constructs", "--port", str(port)],
            )
        )
        upstream_url = f"http://127.0.0.1:{port}"
        wait_http(f"{upstream_url}/__count")
        os.chdir(workdir)
        service = Service("constructs", spec, "/api", {})
        bff = start_bff(service, upstream_url, spec)
        procs.append(bff.process)
        mesh = start_mesh(spec, f"{upstream_url}/api", "constructs")
        procs.append(mesh.process)
        lines = [
            "| construct | bff: query, answer | Mesh: query, answer |",
            "| --- | --- | --- |",
        ]
        for label, bff_query, mesh_query in ANSWER_CHECKS:
            cells = []
            for server, query in ((bff, bff_query), (mesh, mesh_query or bff_query)):
                got = answer(server.url, query)
                for error in got.get("errors") or []:
                    error.pop("locations", None)
                    error.pop("extensions", None)
                cells.append(cell([query, json.dumps(got)], code=True))
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
        print("\n".join(["", *lines]))
    finally:
        stop_all(procs)
        os.chdir(ROOT)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mapping", action="store_true", help="print the mapping table and stop")
    parser.add_argument("--answers", action="store_true", help="with --mapping: both served over the same fixed JSON")
    parser.add_argument("--service", choices=sorted(SERVICES), default="pets")
    parser.add_argument("--seed", type=int, default=20, help="pets (items) added to the service's two before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load per server and query before the rounds")
    parser.add_argument(
        "--mesh",
        action="append",
        type=lambda text: tuple(text.split("=", 1)) if "=" in text else (text, text),
        help="name=MESH_FETCH (agent|whatwg|native), repeatable; the first is the reference (default mesh=whatwg)",
    )
    parser.add_argument("--profile", type=int, default=0, help="seconds of py-spy on bff under load after the rounds")
    parser.add_argument("--serve-upstream", choices=[*sorted(SERVICES), "constructs"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.mesh = args.mesh or [("mesh", "whatwg")]
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.port)
        return 0
    if args.mapping:
        return run_mapping(args)
    return run_cpu(args)


if __name__ == "__main__":
    raise SystemExit(main())
