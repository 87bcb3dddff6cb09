#!/usr/bin/env python
"""Hostile clients against one ``bff demo`` process: what each holds, what signed-in users still get.

Starts ``bff demo`` serving tests/support/hostile_schema.py (a subscription anyone may keep open,
answers as large as asked) with ``--streams`` slots per process, then runs each hostile client in
turn over raw sockets, and while it is at its worst signs users in at the demo's IdP and opens
their streams (one session each, ``BFF_STREAMS_PER_SESSION`` streams per session) until the server
refuses one. For each client it reports: the slots it holds (and the anonymous ones), the refusals
by limit (``bff_streams_refused_total``), whether the server aborted it and after how long
(``bff_connections_aborted_total{reason="write_stall"}``), the worker's RSS before and after (read
from ``/proc/<pid>/status``), and the streams signed-in users opened meanwhile.

    python scripts/bench_hostile.py                          # 100 slots, 5 s write timeout
    python scripts/bench_hostile.py --streams 30 --markdown BENCHMARKS.md   # the "Hostile clients" section
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from tests.support.rawclients import (  # noqa: E402
    BffProcess,
    RawWebSocket,
    deflated,
    demo_sign_in,
    frame,
    metric_value,
    subscribe,
)

SSE = {"Accept": "text/event-stream", "Content-Type": "application/json"}
FOREVER = {"query": "subscription { forever }"}
LIMITS = ("per_process", "per_session", "per_connection", "anonymous", "anonymous_per_address")
MiB = 1024 * 1024


@dataclass
class Row:
    client: str
    held: str = ""
    refused: str = ""
    aborted: str = ""
    rss: str = ""
    users: str = ""
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, bff: BffProcess, per_session: int) -> None:
        self.bff = bff
        self.per_session = per_session
        self.users = 0

    def sample(self) -> dict[str, float]:
        text = self.bff.metrics()
        values = {limit: metric_value(text, "bff_streams_refused_total", limit=limit) for limit in LIMITS}
        values["open"] = metric_value(text, "bff_streams_open")
        values["open_anonymous"] = metric_value(text, "bff_streams_open_anonymous")
        values["aborted"] = metric_value(text, "bff_connections_aborted_total", reason="write_stall")
        return values

    async def signed_in_streams(self, stack: contextlib.AsyncExitStack, users: int) -> tuple[int, int]:
        """Sign ``users`` users in and open streams for each until one is refused; (opened, users
        that got all of theirs)."""
        opened = full = 0
        for _ in range(users):
            self.users += 1
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=self.bff.url, timeout=30))
            # the demo IdP knows three users; every sign-in is a session of its own
            await demo_sign_in(client, ("alice", "bob", "carol")[self.users % 3])
            mine = 0
            for _ in range(self.per_session):
                response = await stack.enter_async_context(client.stream("POST", "/graphql", json=FOREVER, headers=SSE))
                if response.status_code != 200:
                    await response.aread()
                    break
                async for line in response.aiter_lines():
                    if line.startswith("event: next"):
                        break
                mine += 1
            opened += mine
            full += mine == self.per_session
        return opened, full

    async def wait_abort(self, before: float, timeout: float) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if (await asyncio.to_thread(self.sample))["aborted"] > before:
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        return None


def _refused(before: dict[str, float], after: dict[str, float]) -> str:
    parts = [f"{limit} {after[limit] - before[limit]:.0f}" for limit in LIMITS if after[limit] > before[limit]]
    return ", ".join(parts) or "none"


async def hostile_streams(
    bench: Bench, name: str, attack: Callable[[], list[object]], users: int, timeout: float
) -> Row:
    """Run ``attack`` (it opens its sockets and returns them), measure, sign users in meanwhile."""
    bff = bench.bff
    before, rss_before = bench.sample(), bff.rss_kib()
    started = time.monotonic()
    sockets = await asyncio.to_thread(attack)
    await asyncio.sleep(1.0)
    during = bench.sample()
    row = Row(name)
    row.held = f"{during['open']:.0f} (anonymous {during['open_anonymous']:.0f})"
    async with contextlib.AsyncExitStack() as stack:
        opened, full = await bench.signed_in_streams(stack, users)
        row.users = f"{opened} streams; {full}/{users} users got all {bench.per_session}"
        row.notes.append(f"users served {time.monotonic() - started:.1f} s after the attack began")
    took = await bench.wait_abort(before["aborted"], timeout)
    row.aborted = "no" if took is None else f"yes, {time.monotonic() - started:.1f} s after it began"
    after = bench.sample()
    row.refused = _refused(before, after)
    row.rss = f"{rss_before / 1024:.0f} -> {bff.rss_kib() / 1024:.0f} MiB"
    for sock in sockets:
        with contextlib.suppress(Exception):
            sock.close()  # type: ignore[attr-defined]
    await asyncio.sleep(0.5)
    return row


def ws_non_reader(port: int, operations: int) -> Callable[[], list[object]]:
    def attack() -> list[object]:
        ws = RawWebSocket.connect(port, receive_buffer=4096)
        ws.send_text(json.dumps({"type": "connection_init"}))
        for i in range(operations):
            ws.send_text(subscribe(f"s{i}", FOREVER["query"]))
            ws.send_text(subscribe(f"q{i}", "{ blob(size: 1000000) }"))
        return [ws]

    return attack


def ws_connections(port: int, connections: int, each: int) -> Callable[[], list[object]]:
    def attack() -> list[object]:
        sockets = []
        for c in range(connections):
            ws = RawWebSocket.connect(port)
            ws.send_text(json.dumps({"type": "connection_init"}))
            for i in range(each):
                ws.send_text(subscribe(f"c{c}-{i}", FOREVER["query"]))
            sockets.append(ws)
        return sockets

    return attack


def sse_non_readers(port: int, count: int) -> Callable[[], list[object]]:
    import socket

    body = b'{"query": "subscription { flood(size: 200000, interval: 0.001) }"}'

    def attack() -> list[object]:
        sockets = []
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(
                (
                    f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                    f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            sockets.append(sock)
        return sockets

    return attack


def compressed_frames(bff: BffProcess, connections: int) -> Row:
    payload = b'{"type":"connection_init","payload":{"x":"' + b"a" * (15 * MiB) + b'"}}'
    compressed = deflated(payload)
    before = bff.rss_kib()
    codes, negotiated = [], 0
    for _ in range(connections):
        ws = RawWebSocket.connect(bff.port, extensions="permessage-deflate; client_max_window_bits")
        negotiated += ws.header("sec-websocket-extensions") is not None
        ws.send(frame(compressed, rsv1=True))
        codes.append(ws.close_code())
        ws.close()
    time.sleep(0.5)
    row = Row(f"{connections} WebSocket connections, a {len(compressed) // 1024} KB frame inflating to 15 MiB each")
    row.held = "0"
    row.refused = f"close codes {sorted(set(codes))}; compression negotiated on {negotiated}"
    row.rss = f"{before / 1024:.0f} -> {bff.rss_kib() / 1024:.0f} MiB"
    return row


async def apq_flood(bff: BffProcess, count: int) -> Row:
    before = bff.rss_kib()
    async with httpx.AsyncClient(base_url=bff.url, timeout=60) as client:
        gate = asyncio.Semaphore(4)

        async def register(i: int) -> int:
            query = "{ ok }\n#" + f"{i:08d}" * 125_000
            digest = hashlib.sha256(query.encode()).hexdigest()
            body = {"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
            async with gate:
                return (await client.post("/graphql", json=body)).status_code

        statuses = await asyncio.gather(*(register(i) for i in range(count)))
        query = "{ ok }\n#" + f"{0:08d}" * 125_000
        digest = hashlib.sha256(query.encode()).hexdigest()
        again = await client.post(
            "/graphql", json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
        )
    row = Row(f"APQ flood: {count} registrations of 1 MB documents")
    row.held = "registered: " + ("no" if "PERSISTED_QUERY_NOT_FOUND" in again.text else "yes")
    row.refused = f"statuses {sorted(set(statuses))}"
    row.rss = f"{before / 1024:.0f} -> {bff.rss_kib() / 1024:.0f} MiB"
    return row


def big_body(bff: BffProcess, mib: int) -> Row:
    import socket

    before = bff.rss_kib()
    sock = socket.socket()
    sock.connect(("127.0.0.1", bff.port))
    sock.sendall(
        (
            f"POST /auth/native/token HTTP/1.1\r\nHost: 127.0.0.1:{bff.port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    sock.settimeout(5)
    chunk = b"%x\r\n%s\r\n" % (MiB, b" " * MiB)
    sent = 0
    with contextlib.suppress(OSError):
        for _ in range(mib):
            sock.sendall(chunk)
            sent += 1
    answer = b""
    with contextlib.suppress(OSError):
        answer = sock.recv(4096)
    sock.close()
    row = Row(f"a {mib} MiB chunked body to /auth/native/token")
    row.refused = answer.split(b"\r\n", 1)[0].decode(errors="replace") + f" after {sent} MiB sent"
    row.rss = f"{before / 1024:.0f} -> {bff.rss_kib() / 1024:.0f} MiB"
    return row


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100, help="BFF_STREAMS_PER_PROCESS")
    parser.add_argument("--write-timeout", type=float, default=5.0, help="BFF_WRITE_TIMEOUT_SECONDS")
    parser.add_argument("--users", type=int, default=3, help="signed-in users who open streams meanwhile")
    parser.add_argument(
        "--markdown", default=None, help='write the table as the "Hostile clients" section of this file'
    )
    args = parser.parse_args()
    env = {"BFF_STREAMS_PER_PROCESS": str(args.streams), "BFF_WRITE_TIMEOUT_SECONDS": str(args.write_timeout)}
    rows: list[Row] = []
    with BffProcess("demo", env=env) as bff:
        per_session = 10
        bench = Bench(bff, per_session)
        port, timeout = bff.port, args.write_timeout * 3 + 10
        rows.append(
            await hostile_streams(
                bench,
                "1 WebSocket, 2x60 operations (subscriptions, 1 MB answers), never reads",
                ws_non_reader(port, 60),
                args.users,
                timeout,
            )
        )
        rows.append(
            await hostile_streams(
                bench,
                "10 WebSockets from one address, 10 subscriptions each, reading nothing",
                ws_connections(port, 10, 10),
                args.users,
                1.0,
            )
        )
        rows.append(
            await hostile_streams(
                bench, "20 SSE floods from one address, never read", sse_non_readers(port, 20), args.users, timeout
            )
        )
        rows.append(await asyncio.to_thread(compressed_frames, bff, 8))
        rows.append(await apq_flood(bff, 150))
        rows.append(await asyncio.to_thread(big_body, bff, 100))

    header = (
        f"`python scripts/bench_hostile.py --streams {args.streams} --write-timeout {args.write_timeout:g} "
        f"--users {args.users}` (defaults otherwise: BFF_STREAMS_PER_CONNECTION 20, "
        f"BFF_STREAMS_ANONYMOUS_SHARE 0.5, BFF_STREAMS_ANONYMOUS_PER_ADDRESS 20, BFF_STREAMS_PER_SESSION {per_session})"
    )
    table = "| hostile client | slots it held | refused | aborted | worker RSS | signed-in users meanwhile |\n"
    table += "| --- | --- | --- | --- | --- | --- |\n"
    table += "".join(f"| {r.client} | {r.held} | {r.refused} | {r.aborted} | {r.rss} | {r.users} |\n" for r in rows)
    print(f"\n{header}\n\n{table}")
    for row in rows:
        for note in row.notes:
            print(f"  {row.client}: {note}")
    if args.markdown:
        from bench_streams import _replace_section

        _replace_section(args.markdown, "Hostile clients", f"{header}\n\n{table}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(asyncio.run(main()))
