#!/usr/bin/env python
"""Open streams on one worker: memory per stream, event latency, events/s and CPU per event.

Starts a redis-server and one `bff serve` worker serving this module's schema
(``--schema bench_streams:schema``): its subscription ``tick`` yields, once a second, the wall-clock
time at which one shared ticker produced the tick, to every open stream at once. The sessions
(``--streams`` signed-in sessions, one stream each) are created directly in Redis. Client
processes (``--clients``, aiohttp) open the streams over real sockets and, for ``--seconds``,
record for every event the time from its production to the client reading it.

Measures the worker's RSS after start-up (and one warm-up stream) and again with every stream open
(memory per stream), the latency percentiles, events/s, and the worker's CPU time per event (its
utime + stime over the window, which includes the heartbeats and session watchers of the idle
streams). The clients' CPU is printed too: near one core per client process, the client is the
bottleneck and the latency figures are the client's, not the BFF's.

    python scripts/bench_streams.py --streams 1000 --seconds 20 --clients 2
    python scripts/bench_streams.py --streams 1000 --markdown BENCHMARKS.md   # writes the "Streams" section
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

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
            await asyncio.sleep(1.0 - time.time() % 1.0)
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
        if await info.context.session() is None:
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
    """One client process: opens a stream per cookie; sends back its latencies and CPU time."""
    import aiohttp

    async def run() -> tuple[list[float], int, int, float]:
        latencies: list[float] = []
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
                                    latencies.append(now - float(line[22:].split(b"}", 1)[0]))
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
            return latencies, opened, failed, await measured

    latencies, opened, failed, cpu = asyncio.run(run())
    out.send((latencies, opened, failed, cpu))  # type: ignore[attr-defined]


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


def _replace_section(path: str, title: str, body: str) -> None:
    """Replace the ``## {title}`` section of the markdown file (up to the next ``## ``), or append it."""
    from pathlib import Path

    file = Path(path)
    text = file.read_text() if file.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == f"## {title}"), None)
    section = f"## {title}\n\n{body.strip()}\n"
    if start is None:
        file.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "".join(lines[end:])
    file.write_text("".join(lines[:start]) + section + ("\n" + rest if rest else ""))


async def main() -> int:
    import argparse
    import multiprocessing
    import os
    import sys

    import httpx

    sys.path.insert(0, SCRIPTS)
    from benchkit import ROOT, stop_all, wait_http

    from tests.support.servers import RedisServer, free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--markdown", default=None, help='write the table as the "Streams" section of this file')
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    redis = RedisServer().start()
    procs: list[object] = []
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BFF_")},
            "BFF_PUBLIC_URL": url,
            "BFF_COOKIE_SECURE": "false",
            "BFF_LOG_LEVEL": "warning",
            "BFF_SESSION_STORE": redis.url,
            "BFF_SESSION_SECRET": SECRET,
            "BFF_STREAMS_PER_PROCESS": str(args.streams + 10),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT)]),
        }
        import subprocess

        worker = subprocess.Popen(
            [sys.executable, "-m", "bff", "serve", "--port", str(port), "--schema", "bench_streams:schema"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        procs.append(worker)
        wait_http(f"{url}/healthz")
        cookies = await _make_sessions(redis.url, args.streams + 1)
        # warm-up: one stream through one tick (imports, caches, the ticker task), then closed
        async with (
            httpx.AsyncClient(base_url=url, timeout=30, cookies={"bff_session": cookies.pop()}) as client,
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
            clients.append((process, receive))

        await asyncio.sleep(max(0.0, start_at - time.time()))
        rss_open = _rss_kib(worker.pid)
        cpu_start = _cpu_seconds(worker.pid)
        await asyncio.sleep(max(0.0, stop_at - time.time()))
        cpu_used = _cpu_seconds(worker.pid) - cpu_start
        rss_after = _rss_kib(worker.pid)

        latencies: list[float] = []
        opened = failed = 0
        client_cpu: list[float] = []
        for process, receive in clients:
            result = await asyncio.to_thread(receive.recv)
            latencies.extend(result[0])
            opened += result[1]
            failed += result[2]
            client_cpu.append(result[3])
            await asyncio.to_thread(process.join, 30)
        latencies.sort()
        events = len(latencies)
        ms = [_percentile(latencies, q) * 1000 for q in (0.5, 0.95, 0.99)]
        client_share = max(client_cpu, default=0.0) / args.seconds
        per_stream = (rss_open - rss_before) / max(1, opened)
        rows = [
            ("streams open / refused or failed", f"{opened} / {failed}"),
            ("worker RSS before / with the streams open", f"{rss_before / 1024:.1f} MiB / {rss_open / 1024:.1f} MiB"),
            ("memory per open stream", f"{per_stream:.1f} KiB"),
            ("worker RSS at the end of the window", f"{rss_after / 1024:.1f} MiB"),
            ("event latency p50 / p95 / p99", f"{ms[0]:.1f} / {ms[1]:.1f} / {ms[2]:.1f} ms"),
            ("events delivered / s", f"{events / args.seconds:.0f}"),
            (
                "worker CPU per event",
                f"{cpu_used / max(1, events) * 1e6:.0f} µs ({cpu_used / args.seconds:.0%} of a core)",
            ),
            (
                "client CPU (busiest client process)",
                f"{client_share:.0%} of a core ({args.clients} client process(es))",
            ),
        ]
        table = "| measure | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
        command = (
            f"python scripts/bench_streams.py --streams {args.streams} --seconds {args.seconds:g} "
            f"--clients {args.clients}"
        )
        print(f"\n{command}\n\n{table}")
        if args.markdown:
            _replace_section(args.markdown, "Streams", f"`{command}`\n\n{table}")
        return 0 if failed == 0 and opened == args.streams else 1
    finally:
        stop_all(procs)  # type: ignore[arg-type]
        redis.cleanup()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
