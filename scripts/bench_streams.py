#!/usr/bin/env python
"""Open streams on one worker: memory per stream, event latency, events/s and CPU per event.

Starts a redis-server and one `bff serve` worker serving this module's schema
(``--schema bench_streams:schema``): its subscription ``tick`` yields, once a second, the wall-clock
time at which one shared ticker produced the tick, to every open stream at once. The sessions
(``--streams`` signed-in sessions, one stream each) are created directly in Redis. Client
processes (``--clients``, aiohttp) open the streams over real sockets and, for ``--seconds``,
record for every event the time from its production to the client reading it.

Measures the worker's RSS after start-up (and one warm-up stream) and again with every stream open
(memory per stream), the latency percentiles, how long each tick took to reach every stream (its
last event; the fastest, median and slowest tick: a few ticks slowed by whatever else the machine
runs move the percentiles, not the median tick), events/s, and the worker's CPU time per event (its
utime + stime over the window, which includes the heartbeats and session watchers of the idle
streams). The clients' CPU is printed too: near one core per client process, the client is the
bottleneck and the latency figures are the client's, not the BFF's.

``--variant name@ref`` (repeatable) measures the ``bff`` package of a git ref too (exported with
``git archive``; the sessions, the schema and the clients stay this tree's), ``--rounds`` times,
alternated with the others, one column each: a change A/B on one machine in one run.

    python scripts/bench_streams.py --streams 1000 --seconds 20 --clients 2
    python scripts/bench_streams.py --streams 1000 --markdown BENCHMARKS.md   # writes the "Streams" table
    python scripts/bench_streams.py --variant before@HEAD --variant now --rounds 2   # a change, A/B
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import strawberry

from bff import build_schema

# -- the schema the worker serves (imported there by reference: keep this part free of the rest) --


class _Tick(asyncio.Event):
    stamp = 0.0


class Ticker:
    """One task per process: every whole second, wakes every stream waiting for the tick."""

    def __init__(self) -> None:
        self._tick: _Tick | None = None
        self._task: asyncio.Task[None] | None = None

    def current(self) -> _Tick:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bench-ticker")
        if self._tick is None:
            self._tick = _Tick()
        return self._tick

    async def _run(self) -> None:
        while True:
            # a timer may fire a few ms early (uvloop counts from the time its loop iteration began):
            # sleep until the clock says so, or the next tick would come right after this one
            due = float(int(time.time()) + 1)
            while (left := due - time.time()) > 0:  # noqa: ASYNC110 (waiting for the clock, not for a party)
                await asyncio.sleep(left)
            tick, self._tick = self._tick, _Tick()
            if tick is not None:
                tick.stamp = time.time()
                tick.set()


ticker = Ticker()


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def tick(self, info: strawberry.Info) -> AsyncIterator[float]:
        """When the shared ticker produced each tick (``time.time()``), for a signed-in session."""
        if await info.context.user() is None:
            from bff import Unauthenticated

            raise Unauthenticated()
        while True:
            tick = ticker.current()
            await tick.wait()
            yield tick.stamp


schema = build_schema(query=Query, subscription=Subscription)

# -- the benchmark ---------------------------------------------------------------------------------

SUBSCRIBE = b'{"query": "subscription { tick }"}'
HEADERS = {"Accept": "text/event-stream", "Content-Type": "application/json"}
SECRET = "bench-streams-secret"
SCRIPTS = os.path.dirname(os.path.abspath(__file__))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(url: str, cookies: list[str], start_at: float, stop_at: float, out: object) -> None:
    """One client process: opens a stream per cookie; sends back its latencies, the latency of each
    tick's last event (by the tick's time), and its CPU time."""
    import aiohttp

    async def run() -> tuple[list[float], int, int, float]:
        latencies: list[float] = []
        last: dict[float, float] = {}  # a tick's time: the latency of its last event read here
        opened = 0
        failed = 0
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def stream(cookie: str) -> None:
                nonlocal opened, failed
                headers = {**HEADERS, "Cookie": f"bff_session={cookie}"}
                try:
                    async with http.post(f"{url}/graphql", data=SUBSCRIBE, headers=headers) as response:
                        if response.status != 200:
                            failed += 1
                            return
                        opened += 1
                        async for line in response.content:
                            if line.startswith(b"data: {"):
                                now = time.time()
                                if line.startswith(b'data: {"data":{"tick":') and start_at <= now < stop_at:
                                    stamp = float(line[22:].split(b"}", 1)[0])
                                    latencies.append(now - stamp)
                                    if start_at <= stamp <= stop_at - 1.0:  # ticks wholly in the window
                                        last[stamp] = now - stamp
                                elif b'"errors"' in line:
                                    failed += 1
                                    return
                            if time.time() >= stop_at:
                                return
                except (aiohttp.ClientError, OSError):
                    failed += 1

            gate = asyncio.Semaphore(50)  # open gradually: the listen backlog stays small

            async def gated(cookie: str) -> None:
                async with gate:
                    task = asyncio.ensure_future(stream(cookie))
                    await asyncio.sleep(0.002)
                await task

            async def window_cpu() -> float:
                await asyncio.sleep(max(0.0, start_at - time.time()))
                cpu = time.process_time()
                await asyncio.sleep(max(0.0, stop_at - time.time()))
                return time.process_time() - cpu

            measured = asyncio.ensure_future(window_cpu())
            await asyncio.gather(*(gated(c) for c in cookies))
            return latencies, last, opened, failed, await measured

    out.send(asyncio.run(run()))  # type: ignore[attr-defined]


async def _make_sessions(redis_url: str, count: int) -> list[str]:
    from bff.resources import open_resources
    from bff.settings import Settings
    from tests.support.sessions import store_session

    logging.getLogger("bff").setLevel(logging.ERROR)  # the store's start-up advice is not for a benchmark
    settings = Settings(
        public_url="http://127.0.0.1:1", cookie_secure=False, session_secret=SECRET, session_store=redis_url
    )
    async with open_resources(settings, log_checks=False) as resources:
        return [await store_session(resources, f"bench-token-{i}", sub=f"user{i}") for i in range(count)]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


MARKERS = ("<!-- streams:start -->", "<!-- streams:end -->")


def _replace_section(path: str, title: str, body: str) -> None:
    """Write ``body`` between the `MARKERS` of the markdown file (the prose around them stays), else
    as the ``## {title}`` section (up to the next ``## ``), else append that section."""
    from pathlib import Path

    file = Path(path)
    text = file.read_text() if file.exists() else "# Benchmarks\n"
    start, end = MARKERS
    if start in text and end in text:
        before, _, rest = text.partition(start)
        file.write_text(f"{before}{start}\n{body.strip()}\n{end}{rest.partition(end)[2]}")
        return
    lines = text.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.rstrip() == f"## {title}"), None)
    section = f"## {title}\n\n{body.strip()}\n"
    if first is None:
        file.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    last = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "".join(lines[last:])
    file.write_text("".join(lines[:first]) + section + ("\n" + rest if rest else ""))


def _export(ref: str, into: str) -> str:
    """The ``bff`` package of git ``ref``, exported into a directory of ``into`` (no worktree)."""
    import re
    import subprocess

    from benchkit import ROOT

    path = os.path.join(into, re.sub(r"[^\w.-]", "_", ref))
    os.makedirs(path, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "bff"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return path


async def _measure(args: Any, redis_url: str, cookies: list[str], warm_cookie: str, code: str | None) -> list[str]:
    """One run: a worker (the ``bff`` package of ``code``, else this tree's) and every stream;
    the table's values, in the order of `ROWS`."""
    import multiprocessing
    import subprocess
    import sys

    import httpx
    from benchkit import ROOT, stop_all, wait_http

    from tests.support.servers import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BFF_")},
        "BFF_PUBLIC_URL": url,
        "BFF_COOKIE_SECURE": "false",
        "BFF_LOG_LEVEL": "warning",
        "BFF_SESSION_STORE": redis_url,
        "BFF_SESSION_SECRET": SECRET,
        "BFF_STREAMS_PER_PROCESS": str(args.streams + 10),
        "PYTHONPATH": os.pathsep.join([code or str(ROOT), str(ROOT / "scripts")]),
    }
    procs: list[Any] = []
    try:
        # `python -m bff` puts its working directory first on sys.path: an exported package's own
        worker = subprocess.Popen(
            [sys.executable, "-m", "bff", "serve", "--port", str(port), "--schema", "bench_streams:schema"],
            env=env,
            cwd=code or ROOT,
            stdout=subprocess.DEVNULL,
        )
        procs.append(worker)
        wait_http(f"{url}/healthz")
        # warm-up: one stream through one tick (imports, caches, the ticker task), then closed
        async with (
            httpx.AsyncClient(base_url=url, timeout=30, cookies={"bff_session": warm_cookie}) as client,
            client.stream("POST", "/graphql", content=SUBSCRIBE, headers=HEADERS) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break
        await asyncio.sleep(1.0)
        rss_before = _rss_kib(worker.pid)

        open_seconds = max(5.0, args.streams / 150)  # the clients' budget for opening every stream
        start_at = time.time() + open_seconds + 2.0
        stop_at = start_at + args.seconds
        context = multiprocessing.get_context("spawn")
        clients = []
        for i in range(args.clients):
            receive, send = context.Pipe(duplex=False)
            share = cookies[i :: args.clients]
            process = context.Process(target=_client, args=(url, share, start_at, stop_at, send))
            process.start()
            procs.append(process)
            clients.append((process, receive))

        await asyncio.sleep(max(0.0, start_at - time.time()))
        rss_open = _rss_kib(worker.pid)
        cpu_start = _cpu_seconds(worker.pid)
        await asyncio.sleep(max(0.0, stop_at - time.time()))
        cpu_used = _cpu_seconds(worker.pid) - cpu_start
        rss_after = _rss_kib(worker.pid)

        latencies: list[float] = []
        last: dict[float, float] = {}
        opened = failed = 0
        client_cpu: list[float] = []
        for process, receive in clients:
            result = await asyncio.to_thread(receive.recv)
            latencies.extend(result[0])
            for stamp, latency in result[1].items():
                last[stamp] = max(latency, last.get(stamp, 0.0))
            opened += result[2]
            failed += result[3]
            client_cpu.append(result[4])
            await asyncio.to_thread(process.join, 30)
    finally:
        stop_all([p for p in procs if isinstance(p, subprocess.Popen)])
        for process in procs:
            if not isinstance(process, subprocess.Popen) and process.is_alive():
                process.terminate()
    latencies.sort()
    events = len(latencies)
    ms = [_percentile(latencies, q) * 1000 for q in (0.5, 0.95, 0.99)]
    fan_out = sorted(last.values())  # how long each tick took to reach every stream
    client_share = max(client_cpu, default=0.0) / args.seconds
    per_stream = (rss_open - rss_before) / max(1, opened)
    args.ok = args.ok and failed == 0 and opened == args.streams
    return [
        f"{opened} / {failed}",
        f"{rss_before / 1024:.1f} MiB / {rss_open / 1024:.1f} MiB",
        f"{per_stream:.1f} KiB",
        f"{rss_after / 1024:.1f} MiB",
        f"{ms[0]:.1f} / {ms[1]:.1f} / {ms[2]:.1f} ms",
        f"{_percentile(fan_out, 0.0) * 1000:.1f} / {_percentile(fan_out, 0.5) * 1000:.1f} / "
        f"{_percentile(fan_out, 1.0) * 1000:.1f} ms ({len(fan_out)} ticks)",
        f"{events / args.seconds:.0f}",
        f"{cpu_used / max(1, events) * 1e6:.0f} µs ({cpu_used / args.seconds:.0%} of a core)",
        f"{client_share:.0%} of a core ({args.clients} client process(es))",
    ]


ROWS = (
    "streams open / refused or failed",
    "worker RSS before / with the streams open",
    "memory per open stream",
    "worker RSS at the end of the window",
    "event latency p50 / p95 / p99",
    "a tick's last event: fastest / median / slowest tick",
    "events delivered / s",
    "worker CPU per event",
    "client CPU (busiest client process)",
)


async def main() -> int:
    import argparse
    import shutil
    import sys
    import tempfile

    sys.path.insert(0, SCRIPTS)
    import benchkit  # noqa: F401 (makes the project root importable, for tests.support)

    from tests.support.servers import RedisServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="name[@git-ref]: the bff package of that ref (default: this tree's), repeatable",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant, alternated")
    parser.add_argument("--markdown", default=None, help='write the table into the "Streams" section of this file')
    args = parser.parse_args()
    args.ok = True
    variants = [spec.partition("@") for spec in args.variant] or [("now", "", "")]

    redis = RedisServer().start()
    trees = tempfile.mkdtemp(prefix="bff-bench-streams-")
    try:
        codes = {name: _export(ref, trees) if ref else None for name, _, ref in variants}
        cookies = await _make_sessions(redis.url, args.streams + 1)
        warm_cookie = cookies.pop()
        columns: list[tuple[str, list[str]]] = []
        for round_ in range(args.rounds):
            for name, _, _ in variants:
                values = await _measure(args, redis.url, cookies, warm_cookie, codes[name])
                label = name if args.rounds == 1 else f"{name} ({round_ + 1})"
                columns.append((label if len(variants) > 1 or args.rounds > 1 else "value", values))
    finally:
        redis.cleanup()
        shutil.rmtree(trees, ignore_errors=True)
    table = "| measure | " + " | ".join(label for label, _ in columns) + " |\n"
    table += "| --- |" + " --- |" * len(columns) + "\n"
    table += "".join(
        f"| {row} | " + " | ".join(values[i] for _, values in columns) + " |\n" for i, row in enumerate(ROWS)
    )
    command = (
        f"python scripts/bench_streams.py --streams {args.streams} --seconds {args.seconds:g} "
        f"--clients {args.clients}"
        + "".join(f" --variant {name}{'@' + ref if ref else ''}" for name, _, ref in variants if args.variant)
        + (f" --rounds {args.rounds}" if args.rounds > 1 else "")
    )
    print(f"\n{command}\n\n{table}")
    if args.markdown:
        _replace_section(args.markdown, "Streams", f"`{command}` on {time.strftime('%Y-%m-%d')}\n\n{table}")
    return 0 if args.ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
