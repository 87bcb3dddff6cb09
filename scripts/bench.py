#!/usr/bin/env python
"""Latency and throughput of `bff` against a graphql-yoga peer, measured side by side in one run.

Starts the development IdP (in this process), a redis-server, the demo upstreams (one process
each, with an artificial latency), `bff serve` (1 worker, then 2, Redis session store) and the
Node peer in bench/peer (same schema and DataLoader resolvers, same upstreams). `wrk` (one
thread, Lua scripts) drives three workloads at 1, 16 and 64 connections, alternating BFF and
peer runs so a noisy machine does not bias the ratio. Also measures memory: RSS with 10,000
sessions in the memory store, and bytes per session in Redis. Writes BENCHMARKS.md (and a PNG
plot when matplotlib is installed).

    python scripts/bench.py                 # the full run (about 6 minutes)
    python scripts/bench.py --quick         # 2 s runs, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchkit import ROOT, bff_serve, cpu_seconds, demo_upstream, stop_all, upstream_settings, wait_http

from bff.demo.idp import DevClient, DevIdentityProvider, DevUser
from tests.support.servers import RedisServer, ThreadedApps, free_port

PEER_DIR = ROOT / "bench" / "peer"
VIEWER = "{ viewer { id name orders { id totalCents items { quantity product { id name priceCents } } } } }"
TWO_BRANCHES = '{ viewer { id name } searchProducts(query: "a", first: 5) { id name priceCents } }'
SEARCH = '{ searchProducts(query: "a", first: 5) { id name priceCents } }'
TYPENAME = "{ __typename }"
VIEWER_ONLY = "{ viewer { id name } }"
WORKLOADS = {"viewer": VIEWER, "two-branches": TWO_BRANCHES, "anonymous-search": SEARCH, "typename": TYPENAME}
ANONYMOUS = {"anonymous-search", "typename"}
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = float("nan")  # the server's CPU per request (process user+system / requests)


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)([a-z]+)", value)
    if match is None:
        return float("nan")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}.get(unit, float("nan"))


def wrk(url: str, body: str, headers: dict[str, str], connections: int, duration: float) -> Result:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115 - wrk reads it by name
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps({'query': body}))}"]
    lines += [
        f'wrk.headers["{k}"] = {json.dumps(v)}' for k, v in {"Content-Type": "application/json", **headers}.items()
    ]
    lines += [
        "local bad = 0",
        "response = function(status, headers, body) if status ~= 200 or string.find(body, '\"errors\"') then bad = bad + 1 end end",
        'done = function(summary, latency, requests) io.write(string.format("BAD %d\\n", bad)) end',
    ]
    script.write("\n".join(lines))
    script.close()
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps_match, p50_match, p99_match = (
        re.search(p, out) for p in (r"Requests/sec:\s+([\d.]+)", r"50%\s+(\S+)", r"99%\s+(\S+)")
    )
    rps = float(rps_match.group(1)) if rps_match else 0.0
    p50 = _ms(p50_match.group(1)) if p50_match else float("nan")
    p99 = _ms(p99_match.group(1)) if p99_match else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = re.search(r"BAD (\d+)", out)
    return Result(rps, p50, p99, (int(errors.group(1)) if errors else 0) + (int(bad.group(1)) if bad else 0))


class Stack:
    def __init__(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self.procs: list[subprocess.Popen[bytes]] = []
        self.idp_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.idp_port}"
        self.bff_port = free_port()
        self.client = DevClient("bench-bff", "bench-secret", [f"http://127.0.0.1:{self.bff_port}/auth/callback"])
        self.idp = DevIdentityProvider(self.issuer, [self.client], access_ttl=24 * 3600)
        self.idp_apps = ThreadedApps(self.idp.app(), ports=[self.idp_port])
        self.redis = RedisServer()
        self.upstream_ports = {"accounts": free_port(), "catalog": free_port()}
        self.peer_port = free_port()
        self.bff: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.idp_apps.start()
        self.redis.start()
        for name, port in self.upstream_ports.items():
            self.procs.append(demo_upstream(name, port, self.issuer, "--latency-ms", str(self.latency_ms)))
        user_token = self.idp._access_token(self.client, "authorization_code", DevUser("alice", "bench"), "openid")
        self.user_token = user_token
        service = self.idp._access_token(self.client, "client_credentials", None, "")
        env = {
            **os.environ,
            "PORT": str(self.peer_port),
            "ACCOUNTS_URL": f"http://127.0.0.1:{self.upstream_ports['accounts']}",
            "CATALOG_URL": f"http://127.0.0.1:{self.upstream_ports['catalog']}/graphql",
            "SERVICE_TOKEN": service,
        }
        self.procs.append(subprocess.Popen(["node", "server.mjs"], cwd=PEER_DIR, env=env, stdout=subprocess.DEVNULL))
        for port in self.upstream_ports.values():
            wait_http(f"http://127.0.0.1:{port}/")
        wait_http(f"http://127.0.0.1:{self.peer_port}/graphql")

    def start_bff(self, workers: int, extra: dict[str, str] | None = None) -> None:
        self.stop_bff()
        settings = {
            "BFF_OIDC_ISSUER": self.issuer,
            "BFF_OIDC_CLIENT_ID": self.client.client_id,
            "BFF_OIDC_CLIENT_SECRET": self.client.client_secret,
            "BFF_SESSION_STORE": self.redis.url,
            "BFF_SESSION_SECRET": "bench-secret-0123456789",
            "BFF_UPSTREAMS__CATALOG__ANONYMOUS": "client_credentials",
            **upstream_settings(self.upstream_ports),
            **(extra or {}),
        }
        self.bff = bff_serve(self.bff_port, settings, workers=workers)
        wait_http(f"http://127.0.0.1:{self.bff_port}/healthz")
        time.sleep(1.0 if workers > 1 else 0.2)

    def sign_in(self) -> str:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.bff_port}", timeout=30) as browser:
            login = browser.get("/auth/login")
            page = browser.get(login.headers["location"])
            action = re.search(r'action="([^"]+)"', page.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
            chosen = browser.post(action, data={"user": "alice"})
            browser.get(chosen.headers["location"])
            return str(browser.cookies["bff_session"])

    def stop_bff(self) -> None:
        if self.bff is not None:
            self.bff.terminate()
            self.bff.wait(20)
            self.bff = None

    def stop(self) -> None:
        self.stop_bff()
        stop_all(self.procs)
        self.redis.cleanup()
        self.idp_apps.stop()


def critical_path_ms(stack: Stack, rounds: int = 50) -> float:
    """The viewer query's upstream critical path at 1 connection: me -> orders -> catalog."""
    token = {"Authorization": f"Bearer {stack.user_token}"}
    accounts = f"http://127.0.0.1:{stack.upstream_ports['accounts']}"
    catalog = f"http://127.0.0.1:{stack.upstream_ports['catalog']}/graphql"
    samples = []
    with httpx.Client(headers=token) as http:
        for _ in range(rounds):
            started = time.perf_counter()
            http.get(f"{accounts}/me")
            orders = http.get(f"{accounts}/users/alice/orders", params={"limit": 10}).json()
            ids = sorted({i["productId"] for o in orders for i in o["items"]})
            http.post(
                catalog, json={"query": "query($ids:[ID!]!){productsByIds(ids:$ids){id}}", "variables": {"ids": ids}}
            )
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def memory_figures(redis_url: str) -> dict[str, float]:
    code = """
import asyncio, os, time, gc
from bff.sessions.crypto import SessionCrypto
from bff.sessions.memory import MemorySessionStore
from bff.sessions.models import Session, TokenSet
import bff.app
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) * 1024
async def main():
    store = MemorySessionStore(SessionCrypto(['k']), idle_seconds=3600, absolute_seconds=7200)
    now = time.time()
    gc.collect(); before = rss()
    for i in range(10000):
        await store.create(Session(id=Session.new_id(), sub=f'user{i}', created_at=now, last_seen=now,
            claims={'name': f'User {i}', 'email': f'user{i}@example.com'},
            tokens=TokenSet(access_token='a' * 900, refresh_token='r' * 64, id_token='i' * 900, expires_at=now + 300, issued_at=now)))
    gc.collect()
    print(before, rss())
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after = int(out[0]), int(out[1])

    async def redis_bytes() -> float:
        from redis.asyncio import Redis

        from bff.sessions.crypto import SessionCrypto
        from bff.sessions.models import Session, TokenSet
        from bff.sessions.redis import RedisSessionStore

        store = RedisSessionStore(redis_url, SessionCrypto(["k"]), idle_seconds=3600, absolute_seconds=7200)
        raw = Redis.from_url(redis_url)
        await raw.flushall()
        start = (await raw.info("memory"))["used_memory"]
        now = time.time()
        for i in range(2000):
            await store.create(
                Session(
                    id=Session.new_id(),
                    sub=f"user{i}",
                    created_at=now,
                    last_seen=now,
                    claims={"name": f"User {i}", "email": f"user{i}@example.com"},
                    tokens=TokenSet(
                        access_token="a" * 900,
                        refresh_token="r" * 64,
                        id_token="i" * 900,
                        expires_at=now + 300,
                        issued_at=now,
                    ),
                )
            )
        used = (await raw.info("memory"))["used_memory"] - start
        await raw.aclose()
        await store.close()
        return used / 2000

    return {
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "bytes_per_session_memory": (after - before) / 10000,
        "bytes_per_session_redis": asyncio.run(redis_bytes()),
    }


def measured(pid: int, url: str, body: str, headers: dict[str, str], connections: int, duration: float) -> Result:
    """One wrk run, with the CPU the server process (and its workers) used per request."""
    before = cpu_seconds(pid)
    result = wrk(url, body, headers, connections, duration)
    result.cpu_ms = 1000 * (cpu_seconds(pid) - before) / max(1.0, result.rps * duration)
    return result


def gc_pauses(bff_url: str) -> dict[str, tuple[int, float, int]]:
    """Per generation, from the worker's ``bff_gc_pause_seconds``: collections, the upper bound of
    the longest one's histogram bucket (seconds), and how many lasted over 20 ms."""
    text = httpx.get(f"{bff_url}/metrics", timeout=10).text
    buckets: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        match = re.match(r'bff_gc_pause_seconds_bucket\{generation="(\d)",le="([^"]+)"\} ([\d.e+]+)', line)
        if match:
            buckets.setdefault(match.group(1), []).append((float(match.group(2)), float(match.group(3))))
    figures: dict[str, tuple[int, float, int]] = {}
    for generation, rows in sorted(buckets.items()):
        rows.sort()
        total = int(rows[-1][1])
        longest = next((le for le, count in rows if count >= total), float("inf")) if total else 0.0
        within_20ms = next((count for le, count in rows if le >= 0.02), total)
        figures[generation] = (total, longest, int(total - within_20ms))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of BFF and peer per figure")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 2, 1
    for tool in ("wrk", "node", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install wrk nodejs redis-server)", file=sys.stderr)
            return 2
    if not (PEER_DIR / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True)
    connections = [int(c) for c in args.connections.split(",")]
    workers_list = [int(w) for w in args.workers.split(",")]

    stack = Stack(args.latency_ms)
    stack.start()
    results: dict[tuple[str, str, int], Result] = {}
    pauses: dict[str, tuple[int, float, int]] = {}
    try:
        critical = critical_path_ms(stack)
        bff_url = f"http://127.0.0.1:{stack.bff_port}/graphql"
        peer_url = f"http://127.0.0.1:{stack.peer_port}/graphql"
        peer = stack.procs[-1]
        for workers in workers_list:
            stack.start_bff(workers)
            assert stack.bff is not None
            cookie = stack.sign_in()
            bff_headers = {"Cookie": f"bff_session={cookie}", "X-CSRF": "1"}
            peer_headers = {"Authorization": f"Bearer {stack.user_token}"}
            wrk(bff_url, VIEWER, bff_headers, 16, 3)  # warm up both
            wrk(peer_url, VIEWER, peer_headers, 16, 3)
            for name, query in {**WORKLOADS, "viewer-only": VIEWER_ONLY}.items():
                anonymous = name in ANONYMOUS
                for c in connections if name != "viewer-only" else [1]:
                    runs: dict[str, list[Result]] = {"bff": [], "peer": []}
                    for _ in range(args.rounds):  # alternate A and B
                        runs["bff"].append(
                            measured(stack.bff.pid, bff_url, query, {} if anonymous else bff_headers, c, args.duration)
                        )
                        if workers == workers_list[0]:
                            runs["peer"].append(
                                measured(peer.pid, peer_url, query, {} if anonymous else peer_headers, c, args.duration)
                            )
                    for side, samples in runs.items():
                        if samples:
                            results[(f"{side}-{workers}w" if side == "bff" else "peer", name, c)] = Result(
                                statistics.median(s.rps for s in samples),
                                statistics.median(s.p50_ms for s in samples),
                                statistics.median(s.p99_ms for s in samples),
                                sum(s.errors for s in samples),
                                statistics.median(s.cpu_ms for s in samples),
                            )
                    print(name, c, {k: v for k, v in results.items() if k[1] == name and k[2] == c}, flush=True)
            if workers == 1:
                pauses = gc_pauses(f"http://127.0.0.1:{stack.bff_port}")
        memory = memory_figures(stack.redis.url)
    finally:
        stack.stop()
    write_report(args, results, critical, memory, pauses, workers_list, connections)
    return 0


def write_report(
    args: argparse.Namespace,
    results: dict[tuple[str, str, int], Result],
    critical: float,
    memory: dict[str, float],
    pauses: dict[str, tuple[int, float, int]],
    workers_list: list[int],
    connections: list[int],
) -> None:
    first = f"bff-{workers_list[0]}w"
    lines = [
        START,
        "# Benchmarks",
        "",
        f"Generated by `python scripts/bench.py` on {time.strftime('%Y-%m-%d')}: upstream latency "
        f"{args.latency_ms:g} ms, wrk 1 thread, {args.duration:g} s per run, median of {args.rounds} alternated "
        f"runs; {os.cpu_count()} cores shared by everything (BFF, peer, upstreams, Redis, wrk). CPU ms/req = the "
        "server's user+system CPU time (all its processes) / requests served: the per-core cost, which a busy "
        "machine biases far less than req/s.",
        "",
        "| workload | conns | server | req/s | p50 ms | p99 ms | CPU ms/req | errors | CPU bff/peer | p50 bff/peer |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in WORKLOADS:
        for c in connections:
            peer = results.get(("peer", name, c))
            for side in [*(f"bff-{w}w" for w in workers_list), "peer"]:
                r = results.get((side, name, c))
                if r is None:
                    continue
                cpu_ratio = f"{r.cpu_ms / peer.cpu_ms:.2f}" if peer and side != "peer" else ""
                p50_ratio = f"{r.p50_ms / peer.p50_ms:.2f}" if peer and side != "peer" else ""
                lines.append(
                    f"| {name} | {c} | {side} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_ms:.2f} | "
                    f"{r.errors} | {cpu_ratio} | {p50_ratio} |"
                )
    viewer1 = results[(first, "viewer", 1)]
    two = results[(first, "two-branches", 1)]
    slowest = max(results[(first, "viewer-only", 1)].p50_ms, results[(first, "anonymous-search", 1)].p50_ms)
    efficiency = ", ".join(
        f"{c} connections {results[('peer', 'viewer', c)].cpu_ms / results[(first, 'viewer', c)].cpu_ms:.2f}"
        for c in connections
        if c > 1
    )
    gc_line = "; ".join(
        f"generation {g}: {n} collections, longest under {longest * 1000:g} ms, {over} over 20 ms"
        for g, (n, longest, over) in pauses.items()
    )
    lines += [
        "",
        f"* Efficiency on the viewer query (peer CPU per request / bff's, 1 worker): {efficiency}.",
        f"* Upstream critical path of the viewer query (me -> orders -> catalog, measured directly): {critical:.2f} ms p50.",
        f"* BFF overhead at 1 connection (viewer p50 - critical path): {viewer1.p50_ms - critical:.2f} ms "
        f"(peer: {results[('peer', 'viewer', 1)].p50_ms - critical:.2f} ms).",
        f"* Fan-out ratio (two-branch p50 / slowest branch p50): {two.p50_ms / slowest:.2f}.",
        f"* Garbage-collector pauses in the 1-worker run, all workloads (`bff_gc_pause_seconds`): {gc_line or 'none'}.",
        f"* Memory: {memory['bytes_per_session_memory']:.0f} bytes per session in the memory store "
        f"(RSS {memory['rss_before_mb']:.1f} MB -> {memory['rss_after_mb']:.1f} MB with 10,000 sessions); "
        f"{memory['bytes_per_session_redis']:.0f} bytes per session in Redis.",
        "* Refresh amplification: `python scripts/bench_refresh.py` (refresh grants per session, 1.00 expected).",
        END,
    ]
    section = "\n".join(lines)
    text = args.output.read_text() if args.output.exists() else ""
    if START in text:
        before, _, rest = text.partition(START)
        _, _, after = rest.partition(END)
        text = before + section + after
    else:  # the first run with markers: the old report ran up to the first marked section
        marker = text.find("<!-- ")
        text = section + "\n\n" + (text[marker:] if marker >= 0 else "")
    args.output.write_text(text)
    print(section)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for side in [*(f"bff-{w}w" for w in workers_list), "peer"]:
        xs = [c for c in connections if (side, "viewer", c) in results]
        ax.plot(xs, [results[(side, "viewer", c)].p50_ms for c in xs], marker="o", label=f"{side} p50")
    ax.set_xlabel("connections")
    ax.set_ylabel("viewer query latency (ms)")
    ax.set_xscale("log", base=2)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output.with_suffix(".png"))
    gc.collect()


if __name__ == "__main__":
    raise SystemExit(main())
