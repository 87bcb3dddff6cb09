#!/usr/bin/env python
"""Latency and throughput of `bff` against graphql-yoga peers, measured side by side in one run.

Starts the development IdP (in this process), a redis-server, the demo upstreams (one process
each, with an artificial latency), `bff serve` (1 worker, then 2, Redis session store) and the
Node peers in bench/peer (same schema and DataLoader resolvers, same upstreams): the tuned peer
(keep-alive `http.Agent` per upstream) and the `fetch` peer (Node's global fetch). `wrk` (one
thread, Lua scripts) drives the workloads at 1, 16 and 64 connections, alternating BFF and peer
runs (the order rotating each round) so a noisy machine does not bias the ratio; first with 20 ms
upstreams, then again with upstreams answering at once (viewer, two-branch and anonymous search).
Efficiency = the peer's CPU ms per request / bff's, paired round by round, against each peer, with
its spread over the rounds. Every server's answer to every workload is checked against bff's before
measuring. Also measures memory: RSS with 10,000 sessions in the memory store, and bytes per session
in Redis. Writes BENCHMARKS.md (and a PNG plot when matplotlib is installed).

    python scripts/bench.py                 # the full run (3 rounds, 5 s runs: about 20 minutes)
    python scripts/bench.py --quick         # 2 s runs, 1 round (about 4 minutes)
    python scripts/bench.py --latency-ms 0 --peers tuned=agent,undici=undici,fetch=fetch --output /tmp/b.md
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
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchkit import (
    ROOT,
    bff_serve,
    cpu_seconds,
    demo_upstream,
    stop_all,
    upstream_settings,
    wait_http,
    wrk_stats,
)

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
#: the workloads measured again at every upstream latency after the first (typename calls no upstream)
AGAIN_WORKLOADS = ("viewer", "two-branches", "anonymous-search")
#: PEER_CLIENT values of bench/peer/server.mjs. The tuned peer uses the fastest idiomatic client: undici's
#: Pool, 0-4% less CPU per viewer request than a keep-alive http.Agent in an A/B on the development machine
#: (`python scripts/bench_cpu.py --latency-ms 0 --peer agent=agent --peer undici=undici`; 20 ms alike).
PEER_CLIENTS = ("agent", "undici", "fetch")
TUNED_CLIENT = "undici"
DEFAULT_PEERS = {"tuned": TUNED_CLIENT, "fetch": "fetch"}
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
    """One wrk run; an answer that is not a 200 or carries ``errors`` counts as an error
    (`benchkit.wrk_stats`)."""
    _, rps, p50, p99, bad = wrk_stats(url, body, headers, connections, duration)
    return Result(rps, p50, p99, bad)


def parse_peers(spec: str) -> dict[str, str]:
    """``tuned=agent,fetch=fetch`` (name=PEER_CLIENT; a bare client names itself) -> {name: client}."""
    peers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, client = item.partition("=")
        client = client or name
        if client not in PEER_CLIENTS:
            raise ValueError(f"peer client {client!r}: one of {', '.join(PEER_CLIENTS)}")
        peers[name] = client
    return peers


def canonical(value: object) -> object:
    """A JSON value with every list sorted (by its items' JSON), so answers compare modulo ordering."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


class Stack:
    def __init__(self, latency_ms: float, peers: dict[str, str] | None = None) -> None:
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
        #: the Node peers, by name: their PEER_CLIENT, port and (once started) process
        self.peer_clients = dict(peers or DEFAULT_PEERS)
        self.peer_ports = {name: free_port() for name in self.peer_clients}
        self.peers: dict[str, subprocess.Popen[bytes]] = {}
        self.peer_port = next(iter(self.peer_ports.values()))  # the first (tuned) peer's
        self.bff: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.idp_apps.start()
        self.redis.start()
        for name, port in self.upstream_ports.items():
            self.procs.append(demo_upstream(name, port, self.issuer, "--latency-ms", str(self.latency_ms)))
        user_token = self.idp._access_token(self.client, "authorization_code", DevUser("alice", "bench"), "openid")
        self.user_token = user_token
        service = self.idp._access_token(self.client, "client_credentials", None, "")
        for name, client in self.peer_clients.items():
            env = {
                **os.environ,
                "PORT": str(self.peer_ports[name]),
                "PEER_CLIENT": client,
                "ACCOUNTS_URL": f"http://127.0.0.1:{self.upstream_ports['accounts']}",
                "CATALOG_URL": f"http://127.0.0.1:{self.upstream_ports['catalog']}/graphql",
                "SERVICE_TOKEN": service,
            }
            peer = subprocess.Popen(["node", "server.mjs"], cwd=PEER_DIR, env=env, stdout=subprocess.DEVNULL)
            self.peers[name] = peer
            self.procs.append(peer)
        for port in self.upstream_ports.values():
            wait_http(f"http://127.0.0.1:{port}/")
        for port in self.peer_ports.values():
            wait_http(f"http://127.0.0.1:{port}/graphql")

    def peer_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.peer_ports[name]}/graphql"

    def settings(self) -> dict[str, str]:
        """The BFF_ settings of a BFF on this stack (its IdP client, Redis, upstreams)."""
        return {
            "BFF_OIDC_ISSUER": self.issuer,
            "BFF_OIDC_CLIENT_ID": self.client.client_id,
            "BFF_OIDC_CLIENT_SECRET": self.client.client_secret,
            "BFF_SESSION_STORE": self.redis.url,
            "BFF_SESSION_SECRET": "bench-secret-0123456789",
            "BFF_UPSTREAMS__CATALOG__ANONYMOUS": "client_credentials",
            **upstream_settings(self.upstream_ports),
        }

    def start_bff(self, workers: int, extra: dict[str, str] | None = None) -> None:
        self.stop_bff()
        self.bff = bff_serve(self.bff_port, {**self.settings(), **(extra or {})}, workers=workers)
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


Key = tuple[float, str, str, int]  # (upstream latency ms, server, workload, connections)


def check_answers(stack: Stack, bff_url: str, bff_headers: dict[str, str], peer_headers: dict[str, str]) -> None:
    """Every peer answers every workload as bff does (modulo list ordering), without errors."""
    with httpx.Client(timeout=30) as http:
        for name, query in {**WORKLOADS, "viewer-only": VIEWER_ONLY}.items():
            anonymous = name in ANONYMOUS
            expected = http.post(bff_url, json={"query": query}, headers={} if anonymous else bff_headers).json()
            if "errors" in expected or not expected.get("data"):
                raise RuntimeError(f"bff's answer to {name}: {expected}")
            for peer in stack.peers:
                got = http.post(stack.peer_url(peer), json={"query": query}, headers={} if anonymous else peer_headers)
                if canonical(got.json()) != canonical(expected):
                    raise RuntimeError(f"peer {peer} answers {name} otherwise than bff:\n{got.text}\n{expected}")
    print(f"answers: {', '.join(stack.peers)} answer every workload as bff does", flush=True)


def summary(samples: list[Result]) -> Result:
    return Result(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
        sum(s.errors for s in samples),
        statistics.median(s.cpu_ms for s in samples),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--latency-ms",
        default="20,0",
        help="upstream latencies, one stack each; the first runs every workload, the others "
        + ", ".join(AGAIN_WORKLOADS),
    )
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of BFF and the peers per figure")
    parser.add_argument(
        "--peers",
        default=",".join(f"{k}={v}" for k, v in DEFAULT_PEERS.items()),
        help=f"name=PEER_CLIENT ({'|'.join(PEER_CLIENTS)}), comma-separated; the first is the tuned reference",
    )
    parser.add_argument("--warmup", type=float, default=3, help="seconds of viewer load on each server first")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 round, 1 s warm-up")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup = 2, 1, 1
    for tool in ("wrk", "node", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install wrk nodejs redis-server)", file=sys.stderr)
            return 2
    if not (PEER_DIR / "node_modules" / "undici").exists():  # none yet, or from before the tuned peer
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True)
    connections = [int(c) for c in args.connections.split(",")]
    workers_list = [int(w) for w in args.workers.split(",")]
    latencies = [float(x) for x in str(args.latency_ms).split(",")]
    peers = parse_peers(args.peers)
    args.peers = peers
    args.latencies = latencies

    runs: dict[Key, list[Result]] = {}
    pauses: dict[str, tuple[int, float, int]] = {}
    critical = float("nan")
    memory: dict[str, float] = {}
    for index, latency in enumerate(latencies):
        stack = Stack(latency, peers)
        stack.start()
        try:
            if index == 0:
                critical = critical_path_ms(stack)
            workloads = {**WORKLOADS, "viewer-only": VIEWER_ONLY}
            if index > 0:
                workloads = {name: WORKLOADS[name] for name in AGAIN_WORKLOADS}
            bff_url = f"http://127.0.0.1:{stack.bff_port}/graphql"
            for workers in workers_list:
                stack.start_bff(workers)
                assert stack.bff is not None
                cookie = stack.sign_in()
                bff_headers = {"Cookie": f"bff_session={cookie}", "X-CSRF": "1"}
                peer_headers = {"Authorization": f"Bearer {stack.user_token}"}
                with_peers = workers == workers_list[0]
                if with_peers:
                    check_answers(stack, bff_url, bff_headers, peer_headers)
                servers = {f"bff-{workers}w": (stack.bff.pid, bff_url, bff_headers)}
                if with_peers:
                    for name, proc in stack.peers.items():
                        servers[f"peer-{name}"] = (proc.pid, stack.peer_url(name), peer_headers)
                for _, url, headers in servers.values():  # warm up every server
                    wrk(url, VIEWER, headers, 16, args.warmup)
                for name, query in workloads.items():
                    anonymous = name in ANONYMOUS
                    for c in connections if name != "viewer-only" else [1]:
                        order = list(servers)
                        for round_ in range(args.rounds):  # alternate, the order rotating each round
                            for side in order[round_ % len(order) :] + order[: round_ % len(order)]:
                                pid, url, headers = servers[side]
                                runs.setdefault((latency, side, name, c), []).append(
                                    measured(pid, url, query, {} if anonymous else headers, c, args.duration)
                                )
                        print(
                            f"{latency:g} ms",
                            name,
                            c,
                            {k[1]: summary(v) for k, v in runs.items() if k[0] == latency and k[2:] == (name, c)},
                            flush=True,
                        )
                if workers == workers_list[0] and index == 0:
                    pauses = gc_pauses(f"http://127.0.0.1:{stack.bff_port}")
            if index == 0:
                memory = memory_figures(stack.redis.url)
        finally:
            stack.stop()
    write_report(args, runs, critical, memory, pauses, workers_list, connections)
    return 0


def _spread(values: list[float], digits: int = 2) -> str:
    """The median, and (min-max) when there are several values; empty for none."""
    if not values:
        return ""
    median = f"{statistics.median(values):.{digits}f}"
    if len(values) < 2:
        return median
    return f"{median} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def efficiencies(runs: dict[Key, list[Result]], latency: float, peer: str, bff: str, name: str, c: int) -> list[float]:
    """peer CPU ms/req / bff CPU ms/req, round by round (each pair measured in the same alternation)."""
    peer_runs, bff_runs = runs.get((latency, peer, name, c)), runs.get((latency, bff, name, c))
    if not peer_runs or not bff_runs:
        return []
    return [p.cpu_ms / b.cpu_ms for p, b in zip(peer_runs, bff_runs, strict=False) if b.cpu_ms > 0]


def write_report(
    args: argparse.Namespace,
    runs: dict[Key, list[Result]],
    critical: float,
    memory: dict[str, float],
    pauses: dict[str, tuple[int, float, int]],
    workers_list: list[int],
    connections: list[int],
) -> None:
    latencies: list[float] = args.latencies
    peers: dict[str, str] = args.peers
    first = f"bff-{workers_list[0]}w"
    tuned = next(iter(peers))
    peer_sides = [f"peer-{name}" for name in peers]
    sides = [*(f"bff-{w}w" for w in workers_list), *peer_sides]
    results = {key: summary(samples) for key, samples in runs.items()}
    main_latency = latencies[0]
    peer_words = ", ".join(
        f"`peer-{name}` (`PEER_CLIENT={client}`: "
        + {
            "agent": "node:http with one keep-alive `http.Agent` per upstream",
            "undici": "one undici `Pool` per upstream",
            "fetch": "Node's global `fetch`",
        }[client]
        + ")"
        for name, client in peers.items()
    )
    lines = [
        START,
        "# Benchmarks",
        "",
        f"Generated by `python scripts/bench.py` on {time.strftime('%Y-%m-%d')}: upstream latency "
        + " and ".join(f"{x:g} ms" for x in latencies)
        + f", wrk 1 thread, {args.duration:g} s per run, median of {args.rounds} alternated "
        f"runs (the order rotating each round); {os.cpu_count()} cores shared by everything (BFF, peers, upstreams, "
        "Redis, wrk). CPU ms/req = the server's user+system CPU time (all its processes) / requests served: the "
        "per-core cost, which a busy machine biases far less than req/s. The peers are graphql-yoga 5 with the "
        f"same schema, resolvers and per-request DataLoaders, differing only in their upstream client: {peer_words}. "
        "Every server's answer to every workload was checked equal to bff's before measuring.",
        "",
        "## Efficiency (peer CPU ms/req / bff CPU ms/req; above 1: bff spends less)",
        "",
        "Paired round by round; the median"
        + (f", and the spread over the {args.rounds} rounds (min-max)" if args.rounds >= 2 else "")
        + f". bff is `{first}`.",
        "",
        "| upstreams | workload | conns | bff CPU ms/req | "
        + " | ".join(f"{side} CPU ms/req" for side in peer_sides)
        + " | "
        + " | ".join(f"efficiency vs {name}" for name in peers)
        + " | bff p50 ms | "
        + " | ".join(f"{side} p50 ms" for side in peer_sides)
        + " |",
        "| --- | --- | ---: |" + " ---: |" * (2 + 3 * len(peers)),
    ]
    for latency in latencies:
        for name in [*WORKLOADS, "viewer-only"]:
            for c in connections:
                bff_runs = runs.get((latency, first, name, c))
                if not bff_runs:
                    continue
                cells = [f"{latency:g} ms", name, str(c), _spread([r.cpu_ms for r in bff_runs])]
                cells += [_spread([r.cpu_ms for r in runs.get((latency, side, name, c), [])]) for side in peer_sides]
                for side in peer_sides:
                    values = efficiencies(runs, latency, side, first, name, c)
                    bold = "**" if side == f"peer-{tuned}" and c > 1 and name in {"viewer", "two-branches"} else ""
                    cells.append(f"{bold}{_spread(values)}{bold}" if values else "")
                cells.append(f"{results[(latency, first, name, c)].p50_ms:.2f}")
                cells += [
                    f"{results[(latency, side, name, c)].p50_ms:.2f}" if (latency, side, name, c) in results else ""
                    for side in peer_sides
                ]
                lines.append("| " + " | ".join(cells) + " |")
    for latency in latencies:
        lines += [
            "",
            f"## All runs, upstreams at {latency:g} ms"
            if latency
            else "## All runs, upstreams answering at once (0 ms)",
            "",
            "| workload | conns | server | req/s | p50 ms | p99 ms | CPU ms/req | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in WORKLOADS:
            for c in connections:
                for side in sides:
                    samples = runs.get((latency, side, name, c))
                    if not samples:
                        continue
                    r = results[(latency, side, name, c)]
                    lines.append(
                        f"| {name} | {c} | {side} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                        f"{_spread([s.cpu_ms for s in samples])} | {r.errors} |"
                    )
    lines.append("")
    at = main_latency
    for peer in peers:
        efficiency = ", ".join(
            f"{c} connections {_spread(efficiencies(runs, at, f'peer-{peer}', first, 'viewer', c))}"
            for c in connections
            if c > 1 and (at, first, "viewer", c) in results
        )
        lines.append(f"* Efficiency on the viewer query against `peer-{peer}` ({at:g} ms upstreams): {efficiency}.")
    if (at, first, "viewer", 1) in results:
        viewer1 = results[(at, first, "viewer", 1)]
        two = results[(at, first, "two-branches", 1)]
        slowest = max(results[(at, first, "viewer-only", 1)].p50_ms, results[(at, first, "anonymous-search", 1)].p50_ms)
        peer_overheads = ", ".join(
            f"{side}: {results[(at, side, 'viewer', 1)].p50_ms - critical:.2f} ms"
            for side in peer_sides
            if (at, side, "viewer", 1) in results
        )
        lines += [
            f"* Upstream critical path of the viewer query (me -> orders -> catalog, measured directly, {at:g} ms "
            f"upstreams): {critical:.2f} ms p50.",
            f"* BFF overhead at 1 connection (viewer p50 - critical path): {viewer1.p50_ms - critical:.2f} ms "
            f"({peer_overheads}).",
            f"* Fan-out ratio (two-branch p50 / slowest branch p50, {at:g} ms upstreams): {two.p50_ms / slowest:.2f}.",
        ]
    gc_line = "; ".join(
        f"generation {g}: {n} collections, longest under {longest * 1000:g} ms, {over} over 20 ms"
        for g, (n, longest, over) in pauses.items()
    )
    lines += [
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
    for side in sides:
        xs = [c for c in connections if (at, side, "viewer", c) in results]
        ax.plot(xs, [results[(at, side, "viewer", c)].p50_ms for c in xs], marker="o", label=f"{side} p50")
    ax.set_xlabel("connections")
    ax.set_ylabel(f"viewer query latency (ms), {at:g} ms upstreams")
    ax.set_xscale("log", base=2)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output.with_suffix(".png"))
    gc.collect()


if __name__ == "__main__":
    raise SystemExit(main())
