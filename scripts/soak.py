#!/usr/bin/env python
"""Soak the token lifecycle: N sessions x R replicas for T minutes, short access tokens, optional faults.

Starts the real oidc-provider (rotating refresh tokens with reuse detection: a replayed refresh token
revokes the grant), a redis-server with AOF, the demo upstreams and R `bff serve` processes on it;
signs N users in; then every session sends viewer queries in a loop to a random live replica.
Faults, injected on a timer (``--fault-every`` seconds), any of:

  kill     SIGKILL a random replica (it is restarted 2 s later)
  stop     SIGSTOP a random replica for 3 s, then SIGCONT
  redis    stop Redis (AOF on) for 3 s, then start it again
  delkeys  DEL every key that is not a session record (indexes, one-time keys)

Prints grants per session against the expected rotations, refused refreshes, reuse detections, lost
sessions (a session that answered UNAUTHENTICATED), 5xx, latency p50/p99 and the replicas' RSS over time.

    python scripts/soak.py --sessions 20 --replicas 3 --minutes 10 --access-ttl 20 --faults kill,stop,redis,delkeys
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
from benchkit import (
    bff_serve,
    introspecting_upstreams,
    replica_settings,
    sign_in_users,
    stop_all,
    wait_http,
    wait_stack,
)

from tests.support.servers import OIDCProvider, RedisServer, free_port


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--access-ttl", type=int, default=20)
    parser.add_argument("--faults", default="", help="comma-separated: kill,stop,redis,delkeys")
    parser.add_argument("--fault-every", type=float, default=20.0)
    parser.add_argument("--pause", type=float, default=0.5, help="mean seconds between a session's requests")
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]

    ports = [free_port() for _ in range(args.replicas)]
    procs: list[subprocess.Popen[bytes]] = []
    idp = OIDCProvider(
        redirect_uris=[f"http://127.0.0.1:{p}/auth/callback" for p in ports], access_ttl=args.access_ttl
    ).start()
    redis = RedisServer(persistent=True).start()
    replicas: dict[int, subprocess.Popen[bytes]] = {}
    down: set[int] = set()
    try:
        upstream_ports = introspecting_upstreams(idp.issuer, procs)
        shared = replica_settings(idp.issuer, redis.url, upstream_ports, "soak-shared-secret")
        for i, port in enumerate(ports):
            replicas[i] = bff_serve(port, shared)
        urls = wait_stack(ports, upstream_ports)
        cookies = await sign_in_users(urls, args.sessions)
        before = idp.stats()
        started = time.monotonic()
        end = started + args.minutes * 60
        latencies: list[float] = []
        statuses: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        lost: set[int] = set()
        rss: list[tuple[float, list[float]]] = []
        clients = [httpx.AsyncClient(base_url=u, timeout=30) for u in urls]

        async def session_loop(index: int) -> None:
            while time.monotonic() < end and index not in lost:
                live = [i for i in range(len(urls)) if i not in down]
                replica = random.choice(live) if live else 0
                t0 = time.monotonic()
                try:
                    response = await clients[replica].post(
                        "/graphql",
                        json={"query": "{ viewer { id } }"},
                        headers={"Cookie": f"bff_session={cookies[index]}"},
                    )
                except httpx.HTTPError:
                    statuses["connection error"] += 1  # a killed or stopped replica
                else:
                    latencies.append(time.monotonic() - t0)
                    statuses[str(response.status_code)] += 1
                    try:
                        body = response.json()
                    except ValueError:
                        body = {}
                    for error in body.get("errors") or []:
                        code = error.get("extensions", {}).get("code", "?")
                        codes[code] += 1
                        if code == "UNAUTHENTICATED" and index not in lost:
                            lost.add(index)
                            at = time.monotonic() - started
                            print(f"[{at:6.1f}s] session {index} lost on replica {replica}: {error.get('message')}")
                await asyncio.sleep(random.uniform(0, 2 * args.pause))

        async def chaos() -> None:
            while faults and time.monotonic() + args.fault_every < end:
                await asyncio.sleep(args.fault_every)
                fault = random.choice(faults)
                victim = random.randrange(len(urls))
                print(
                    f"[{time.monotonic() - started:6.1f}s] fault: {fault}"
                    + (f" replica {victim}" if fault in ("kill", "stop") else "")
                )
                if fault == "kill":
                    down.add(victim)
                    replicas[victim].send_signal(signal.SIGKILL)
                    replicas[victim].wait()
                    await asyncio.sleep(2)
                    replicas[victim] = bff_serve(ports[victim], shared)
                    await asyncio.to_thread(wait_http, f"{urls[victim]}/healthz")
                    down.discard(victim)
                elif fault == "stop":
                    replicas[victim].send_signal(signal.SIGSTOP)
                    await asyncio.sleep(3)
                    replicas[victim].send_signal(signal.SIGCONT)
                elif fault == "redis":
                    redis.stop()
                    await asyncio.sleep(3)
                    redis.start()
                elif fault == "delkeys":
                    scan = ["redis-cli", "-p", str(redis.port), "--scan"]
                    found = await asyncio.to_thread(subprocess.run, scan, capture_output=True, text=True, check=False)
                    out = found.stdout.split()
                    doomed = [k for k in out if not k.endswith(":s")]
                    if doomed:
                        delete = ["redis-cli", "-p", str(redis.port), "DEL", *doomed]
                        await asyncio.to_thread(subprocess.run, delete, capture_output=True, check=False)

        async def memory() -> None:
            while time.monotonic() < end:
                rss.append((time.monotonic() - started, [rss_mb(p.pid) for p in replicas.values()]))
                await asyncio.sleep(max(5.0, args.minutes * 6))

        await asyncio.gather(memory(), chaos(), *(session_loop(i) for i in range(args.sessions)))
        elapsed = time.monotonic() - started
        for client in clients:
            await client.aclose()
        after = idp.stats()
        grants = after["refreshGrants"] - before["refreshGrants"]
        expected = elapsed / (args.access_ttl / 2)
        latencies.sort()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0  # noqa: E731
        print(
            f"sessions={args.sessions} replicas={args.replicas} minutes={elapsed / 60:.1f} access_ttl={args.access_ttl}s faults={faults or 'none'}"
        )
        print(f"requests={sum(statuses.values())} statuses={dict(statuses)} error codes={dict(codes)}")
        print(
            f"refresh grants per session={grants / args.sessions:.2f} (expected rotations ~{expected:.2f}: one per half-life)"
        )
        print(
            f"refused refreshes={after['refreshErrors'] - before['refreshErrors']} reuse detections={after['refreshReuse'] - before['refreshReuse']}"
        )
        five_xx = sum(n for s, n in statuses.items() if s.startswith("5"))
        print(f"lost sessions={len(lost)} 5xx={five_xx}")
        print(f"latency p50={p(0.50):.1f} ms p99={p(0.99):.1f} ms max={p(1.0):.1f} ms")
        for at, values in rss:
            print(f"rss t={at:6.0f}s " + " ".join(f"{v:6.1f}MB" for v in values))
        return 0 if not lost and after["refreshReuse"] == before["refreshReuse"] and five_xx == 0 else 1
    finally:
        stop_all([*procs, *replicas.values()])
        redis.cleanup()
        idp.stop()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
