#!/usr/bin/env python
"""CPU milliseconds per viewer request, variants of `bff` alternated with the Node peer in one run.

CPU per request = the server process's CPU time (user + system, from /proc) / requests served by
wrk, so a machine shared with other work biases it far less than requests per second do. Each
variant is a set of BFF_ settings; rounds alternate every variant and the peer; medians are printed.

    python scripts/bench_cpu.py --connections 16 --rounds 3 --duration 5 \\
        --variant httpx:BFF_UPSTREAM_CLIENT=httpx --variant aiohttp:BFF_UPSTREAM_CLIENT=aiohttp
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import VIEWER, Stack, wrk


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--variant", action="append", default=[], help="name:VAR=value,VAR=value")
    args = parser.parse_args()
    variants = {}
    for spec in args.variant or ["default:"]:
        name, _, assignments = spec.partition(":")
        variants[name] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    connections = args.connections or [16]
    stack = Stack(args.latency_ms)
    stack.start()
    results: dict[tuple[str, int], list[float]] = {}
    errors: dict[tuple[str, int], int] = {}
    try:
        peer = stack.procs[-1]
        peer_url = f"http://127.0.0.1:{stack.peer_port}/graphql"
        peer_headers = {"Authorization": f"Bearer {stack.user_token}"}
        for _ in range(args.rounds):
            for name, extra in variants.items():
                stack.start_bff(1, extra)
                cookie = stack.sign_in()
                url = f"http://127.0.0.1:{stack.bff_port}/graphql"
                headers = {"Cookie": f"bff_session={cookie}", "X-CSRF": "1"}
                assert stack.bff is not None
                wrk(url, VIEWER, headers, 4, 1)  # warm up
                for c in connections:
                    before = cpu_seconds(stack.bff.pid)
                    run = wrk(url, VIEWER, headers, c, args.duration)
                    used = cpu_seconds(stack.bff.pid) - before
                    results.setdefault((name, c), []).append(1000 * used / max(1.0, run.rps * args.duration))
                    errors[(name, c)] = errors.get((name, c), 0) + run.errors
            for c in connections:
                before = cpu_seconds(peer.pid)
                run = wrk(peer_url, VIEWER, peer_headers, c, args.duration)
                results.setdefault(("peer", c), []).append(
                    1000 * (cpu_seconds(peer.pid) - before) / max(1.0, run.rps * args.duration)
                )
    finally:
        stack.stop()
    print(f"CPU ms per viewer request (median of {args.rounds} alternated rounds, {args.latency_ms:g} ms upstreams)")
    for (name, c), values in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        failed = f"  {errors[(name, c)]} failed responses" if errors.get((name, c)) else ""
        print(f"  {name:>12} c={c:<3} {statistics.median(values):6.2f}  {[round(v, 2) for v in values]}{failed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
