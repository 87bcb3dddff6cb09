#!/usr/bin/env python
"""Compiled execution plan on vs off (BFF_COMPILED_EXECUTION): CPU per request and p50, A/B.

Starts the stack of scripts/bench.py (development IdP, Redis, demo upstreams with an artificial
latency), then, for each round, `bff serve` (1 worker) with the plan on and with it off, in turn,
each driven by `wrk` on the viewer query at 1, 16 and 64 connections. CPU per request is the
server process's CPU time (user + system, from /proc, children included) over the requests wrk
completed. Prints each round and the medians; a shared machine makes single figures noisy.

    python scripts/bench_compiled.py                       # 3 rounds of 5 s runs
    python scripts/bench_compiled.py --rounds 1 --duration 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import httpx

from bench import VIEWER, Stack, wrk

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants (uvicorn may run the app in a child)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    wanted, total = {pid}, 0.0
    changed = True
    while changed:
        changed = False
        for child, (parent, _) in stats.items():
            if parent in wanted and child not in wanted:
                wanted.add(child)
                changed = True
    for member in wanted:
        total += stats.get(member, (0, 0.0))[1]
    return total


def completed_requests(url: str, cookie: str, connections: int, duration: int) -> tuple[float, float, int]:
    """(p50 ms, requests per second, errors) of one wrk run."""
    result = wrk(url, VIEWER, {"Cookie": f"bff_session={cookie}"}, connections, duration)
    return result.p50_ms, result.rps, result.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,16,64")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    stack = Stack(args.latency_ms)
    stack.start()
    figures: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for round_ in range(args.rounds):
            for variant in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                stack.start_bff(1, {"BFF_COMPILED_EXECUTION": "true" if variant == "on" else "false"})
                assert stack.bff is not None
                url = f"http://127.0.0.1:{stack.bff_port}/graphql"
                cookie = stack.sign_in()
                with httpx.Client(timeout=30) as client:  # warm: the document cached, the plan built
                    for _ in range(20):
                        answer = client.post(url, json={"query": VIEWER}, cookies={"bff_session": cookie}).json()
                        assert "errors" not in answer, answer
                for c in connections:
                    before = cpu_seconds(stack.bff.pid)
                    started = time.monotonic()
                    p50, rps, errors = completed_requests(url, cookie, c, args.duration)
                    elapsed = time.monotonic() - started
                    cpu = cpu_seconds(stack.bff.pid) - before
                    requests = rps * args.duration
                    cpu_ms = 1000 * cpu / requests if requests else float("nan")
                    figures.setdefault((variant, c), []).append((cpu_ms, p50))
                    print(
                        f"round {round_ + 1} compiled={variant:3} c={c:2}: {cpu_ms:.2f} ms CPU/request, "
                        f"p50 {p50:.2f} ms, {rps:.0f} req/s, {errors} errors ({elapsed:.1f} s)",
                        flush=True,
                    )
        stack.stop_bff()
    finally:
        stack.stop()
    print("\nmedians (compiled on / off): CPU ms per request, p50 ms")
    print("| connections | CPU/request on | CPU/request off | on/off | p50 on | p50 off |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in connections:
        on_cpu = statistics.median(x for x, _ in figures[("on", c)])
        off_cpu = statistics.median(x for x, _ in figures[("off", c)])
        # wrk's percentile line is occasionally unparsable (nan): left out of the median
        on_p50 = statistics.median([p for _, p in figures[("on", c)] if p == p] or [float("nan")])
        off_p50 = statistics.median([p for _, p in figures[("off", c)] if p == p] or [float("nan")])
        print(
            f"| {c} | {on_cpu:.2f} ms | {off_cpu:.2f} ms | {on_cpu / off_cpu:.2f} | {on_p50:.2f} ms | {off_p50:.2f} ms |"
        )


if __name__ == "__main__":
    main()
