#!/usr/bin/env python
"""Refresh amplification benchmark: M sessions x N concurrent requests x R replicas, through expiry.

Starts the real oidc-provider (rotating refresh tokens, short access tokens, RFC 8707 resource
indicators), a redis-server, the demo upstreams and R `bff serve` processes sharing Redis; signs M
users in; makes every session's tokens exist (one request each); waits until they are due; then
sends N concurrent GraphQL requests per session, spread round-robin over the replicas. Prints grants
per session per token (must be 1.00) and errors (must be 0).

``--audiences K`` (1-3): each request needs K tokens of the session. 1: the session's own token
(the demo viewer query, as before); 2 or 3: a query over three upstreams (`benchapi/audiences.py`)
whose upstreams ask for K distinct resources (the session's own token then goes unused).

    python scripts/bench_refresh.py --sessions 20 --requests 40 --replicas 3 --audiences 2
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
from benchkit import bff_serve, introspecting_upstreams, replica_settings, sign_in_users, stop_all, wait_stack

from tests.support.servers import OIDCProvider, RedisServer, free_port

BENCHAPI = str(Path(__file__).resolve().parent / "benchapi")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40, help="concurrent requests per session")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--audiences", type=int, default=1, choices=(1, 2, 3), help="tokens each request needs")
    parser.add_argument(
        "--access-ttl",
        type=int,
        default=40,
        help="longer than twice the burst, so no session is legitimately due twice",
    )
    args = parser.parse_args()

    ports = [free_port() for _ in range(args.replicas)]
    procs: list[subprocess.Popen[bytes]] = []
    resources = [f"http://api{i}.bench" for i in range(1, 4)]
    idp = OIDCProvider(
        redirect_uris=[f"http://127.0.0.1:{p}/auth/callback" for p in ports],
        access_ttl=args.access_ttl,
        resources=",".join(resources),
    ).start()
    redis = RedisServer().start()
    try:
        upstream_ports = introspecting_upstreams(idp.issuer, procs)
        shared = replica_settings(idp.issuer, redis.url, upstream_ports, "bench-shared-secret")
        query = "{ viewer { id } }"
        if args.audiences > 1:
            query = "{ one two three }"
            accounts = shared["BFF_UPSTREAMS__ACCOUNTS__URL"]
            # u1 gets the first resource, u2 and u3 the second (K=2) or the second and third (K=3)
            chosen = [resources[0], resources[1], resources[1 if args.audiences == 2 else 2]]
            shared.update(
                {
                    "BFF_SCHEMA": "audiences:schema",
                    "PYTHONPATH": BENCHAPI,
                    "BFF_OIDC_SCOPES": "openid profile email offline_access api",
                }
            )
            for i, resource in enumerate(chosen, start=1):
                shared[f"BFF_UPSTREAMS__U{i}__URL"] = accounts
                shared[f"BFF_UPSTREAMS__U{i}__RESOURCE"] = resource
        procs.extend(bff_serve(port, shared) for port in ports)
        urls = wait_stack(ports, upstream_ports)
        cookies = await sign_in_users(urls, args.sessions)
        # every token a request needs exists (the first request of each session obtains them) ...
        async with httpx.AsyncClient(timeout=30) as warm:
            for i, cookie in enumerate(cookies):
                answer = await warm.post(
                    f"{urls[i % len(urls)]}/graphql", json={"query": query}, headers={"Cookie": f"bff_session={cookie}"}
                )
                if answer.status_code != 200 or "errors" in answer.json():
                    raise SystemExit(f"warm-up request failed: {answer.text[:300]}")
        # ... and is due once its half-life has passed
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
                json={"query": query},
                headers={"Cookie": f"bff_session={cookies[session]}"},
            )
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            if response.status_code != 200 or body.get("errors") or not body.get("data"):
                errors += 1
                for error in body.get("errors") or [{"extensions": {"code": f"HTTP {response.status_code}"}}]:
                    codes[error.get("extensions", {}).get("code", "?")] += 1

        await asyncio.gather(*(one(s, n) for s in range(args.sessions) for n in range(args.requests)))
        elapsed = time.monotonic() - started
        for client in clients:
            await client.aclose()
        await asyncio.sleep(1.0)  # refreshes run beside the requests: let the last ones land
        stats = idp.stats()
        grants = stats["refreshGrants"] - before
        total = args.sessions * args.requests
        expected = args.sessions * args.audiences
        print(
            f"sessions={args.sessions} requests/session={args.requests} replicas={args.replicas} "
            f"audiences={args.audiences}"
        )
        print(f"requests={total} errors={errors} elapsed={elapsed:.2f}s {dict(codes) if codes else ''}")
        print(
            f"refresh grants={grants} per session per token={grants / expected:.2f} "
            f"by resource={stats['refreshGrantsByResource']} "
            f"idp refresh errors={stats['refreshErrors']} reuse={stats['refreshReuse']}"
        )
        return 0 if grants == expected and errors == 0 and stats["refreshReuse"] == 0 else 1
    finally:
        stop_all(procs)
        redis.cleanup()
        idp.stop()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
