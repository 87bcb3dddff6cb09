#!/usr/bin/env python
"""Refresh amplification benchmark: M sessions x N concurrent requests x R replicas, through expiry.

Starts the real oidc-provider (rotating refresh tokens, short access tokens), a redis-server, the
demo upstreams and R `bff serve` processes sharing Redis; signs M users in; waits until their
access tokens are due; then sends N concurrent GraphQL requests per session, spread round-robin
over the replicas. Prints refresh grants per session (must be 1.00) and errors (must be 0).

    python scripts/bench_refresh.py --sessions 20 --requests 40 --replicas 3
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from collections import Counter

import httpx
from benchkit import bff_serve, introspecting_upstreams, replica_settings, sign_in_users, stop_all, wait_stack

from tests.support.servers import OIDCProvider, RedisServer, free_port


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40, help="concurrent requests per session")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument(
        "--access-ttl",
        type=int,
        default=40,
        help="longer than twice the burst, so no session is legitimately due twice",
    )
    args = parser.parse_args()

    ports = [free_port() for _ in range(args.replicas)]
    procs: list[subprocess.Popen[bytes]] = []
    idp = OIDCProvider(
        redirect_uris=[f"http://127.0.0.1:{p}/auth/callback" for p in ports], access_ttl=args.access_ttl
    ).start()
    redis = RedisServer().start()
    try:
        upstream_ports = introspecting_upstreams(idp.issuer, procs)
        shared = replica_settings(idp.issuer, redis.url, upstream_ports, "bench-shared-secret")
        procs.extend(bff_serve(port, shared) for port in ports)
        urls = wait_stack(ports, upstream_ports)
        cookies = await sign_in_users(urls, args.sessions)
        # every access token is due once its half-life has passed
        await asyncio.sleep(args.access_ttl / 2 + 0.5)
        before = idp.stats()["refreshGrants"]

        clients = [httpx.AsyncClient(base_url=u, timeout=30, limits=httpx.Limits(max_connections=200)) for u in urls]
        errors = 0
        codes: Counter[str] = Counter()
        started = time.monotonic()

        async def one(session: int, n: int) -> None:
            nonlocal errors
            client = clients[(session + n) % len(clients)]
            response = await client.post(
                "/graphql",
                json={"query": "{ viewer { id } }"},
                headers={"Cookie": f"bff_session={cookies[session]}"},
            )
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            if response.status_code != 200 or body.get("errors") or not body.get("data", {}).get("viewer"):
                errors += 1
                for error in body.get("errors") or [{"extensions": {"code": f"HTTP {response.status_code}"}}]:
                    codes[error.get("extensions", {}).get("code", "?")] += 1

        await asyncio.gather(*(one(s, n) for s in range(args.sessions) for n in range(args.requests)))
        elapsed = time.monotonic() - started
        for client in clients:
            await client.aclose()
        grants = idp.stats()["refreshGrants"] - before
        total = args.sessions * args.requests
        print(f"sessions={args.sessions} requests/session={args.requests} replicas={args.replicas}")
        print(f"requests={total} errors={errors} elapsed={elapsed:.2f}s {dict(codes) if codes else ''}")
        print(
            f"refresh grants={grants} per session={grants / args.sessions:.2f} "
            f"idp refresh errors={idp.stats()['refreshErrors']}"
        )
        return 0 if grants == args.sessions and errors == 0 else 1
    finally:
        stop_all(procs)
        redis.cleanup()
        idp.stop()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
