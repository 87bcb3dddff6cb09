#!/usr/bin/env python
"""How `bff` scales on one machine and past it: one worker, ``bff serve --workers 2``, and two
replicas (two ``bff serve`` processes on one Redis) behind a load balancer (HAProxy, round robin,
keep-alive to the replicas), alternated round by round on the same stack (Redis session store,
demo upstreams, the viewer query of `scripts/bench.py`, one signed-in session whose cookie every
replica accepts).

For each: requests/s, p50 and p99 from wrk at a fixed number of connections, the BFF's CPU per
request, and the CPU everything else used meanwhile (upstreams, Redis, HAProxy, wrk: on a 2-core
machine they share the cores the workers would use, which caps what a second worker can add).

    python scripts/bench_scale.py --connections 64 --duration 8 --rounds 3
    python scripts/bench_scale.py --write      # BENCHMARKS.md's scaling section
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import ROOT, bff_serve, cpu_seconds, stop_all, wait_http

from bench import VIEWER, Stack, wrk
from tests.support.servers import free_port

START, END = "<!-- scaling:start -->", "<!-- scaling:end -->"


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    bff_cpu_ms: float  # BFF CPU per request (every worker and replica)
    other_cpu_ms: float  # the rest of the machine per request (upstreams, Redis, HAProxy, wrk)


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent (user + system + softirq, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class Fleet:
    """The BFF processes of one setup, and the URL wrk sends to."""

    def __init__(self, stack: Stack, setup: str) -> None:
        self.stack = stack
        self.setup = setup
        self.procs: list[subprocess.Popen[bytes]] = []
        self.config_dir = Path(tempfile.mkdtemp(prefix="bff-scale-"))

    def settings(self) -> dict[str, str]:
        # the public URL every replica names (the load balancer's): cookies and redirects agree
        return {**self.stack.settings(), "BFF_PUBLIC_URL": f"http://127.0.0.1:{self.stack.bff_port}"}

    def start(self) -> str:
        port = self.stack.bff_port
        if self.setup == "1 worker":
            self.procs.append(bff_serve(port, self.settings(), workers=1))
        elif self.setup == "2 workers":
            self.procs.append(bff_serve(port, self.settings(), workers=2))
        else:
            replicas = [free_port(), free_port()]
            for replica in replicas:
                self.procs.append(bff_serve(replica, self.settings(), workers=1))
            for replica in replicas:
                wait_http(f"http://127.0.0.1:{replica}/healthz")
            config = self.config_dir / "haproxy.cfg"
            servers = "\n".join(f"  server r{i} 127.0.0.1:{p} maxconn 256" for i, p in enumerate(replicas))
            config.write_text(
                "global\n  maxconn 4096\n"
                "defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
                "  option http-keep-alive\n"
                f"frontend bff\n  bind 127.0.0.1:{port}\n  default_backend replicas\n"
                f"backend replicas\n  balance roundrobin\n  http-reuse always\n{servers}\n"
            )
            self.procs.append(subprocess.Popen(["haproxy", "-f", str(config), "-db"], stdout=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(1.0)
        return f"http://127.0.0.1:{port}/graphql"

    def bff_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.args[0] != "haproxy"]  # type: ignore[index]

    def stop(self) -> None:
        stop_all(self.procs)
        self.procs = []
        shutil.rmtree(self.config_dir, ignore_errors=True)


def measure(fleet: Fleet, url: str, cookie: str, connections: int, duration: float) -> Run:
    headers = {"Cookie": f"bff_session={cookie}", "Content-Type": "application/json"}
    wrk(url, VIEWER, headers, connections, 2)  # warm every worker's pools and caches
    pids = fleet.bff_pids()
    bff_before, all_before = sum(cpu_seconds(p) for p in pids), machine_cpu()
    result = wrk(url, VIEWER, headers, connections, duration)
    bff_cpu = sum(cpu_seconds(p) for p in pids) - bff_before
    all_cpu = machine_cpu() - all_before
    requests = max(1.0, result.rps * duration)
    return Run(
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        1000 * bff_cpu / requests,
        1000 * max(0.0, all_cpu - bff_cpu) / requests,
    )


SETUPS = ("1 worker", "2 workers", "2 replicas + HAProxy")


def table(runs: dict[str, list[Run]], args: argparse.Namespace) -> str:
    base = statistics.median(r.rps for r in runs["1 worker"])
    lines = [
        f"Generated by `python scripts/bench_scale.py` on {time.strftime('%Y-%m-%d')}: the viewer query, "
        f"{args.connections} connections, {args.duration} s per run, upstreams at {args.latency_ms:g} ms, "
        f"Redis session store; median of {args.rounds} alternated rounds (spread min-max); 2 cores shared by "
        "everything.",
        "",
        "| setup | req/s | vs 1 worker | p50 ms | p99 ms | errors | BFF CPU ms/req | rest of the machine CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for setup in SETUPS:
        rows = runs[setup]
        rps = [r.rps for r in rows]
        lines.append(
            f"| {setup} | {statistics.median(rps):.0f} ({min(rps):.0f}-{max(rps):.0f}) "
            f"| {statistics.median(rps) / base:.2f} | {statistics.median(r.p50_ms for r in rows):.1f} "
            f"| {statistics.median(r.p99_ms for r in rows):.1f} | {sum(r.errors for r in rows)} "
            f"| {statistics.median(r.bff_cpu_ms for r in rows):.2f} | {statistics.median(r.other_cpu_ms for r in rows):.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (wrk takes whole seconds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's scaling section")
    args = parser.parse_args()
    if shutil.which("haproxy") is None:
        print("bench_scale: haproxy is needed for the replicas (apt-get install haproxy)", file=sys.stderr)
        return 2
    stack = Stack(args.latency_ms, peers={})
    stack.start()
    runs: dict[str, list[Run]] = {setup: [] for setup in SETUPS}
    try:
        stack.start_bff(1)
        cookie = stack.sign_in()
        stack.stop_bff()
        for round_ in range(args.rounds):
            order = SETUPS[round_ % len(SETUPS) :] + SETUPS[: round_ % len(SETUPS)]
            for setup in order:
                fleet = Fleet(stack, setup)
                try:
                    url = fleet.start()
                    run = measure(fleet, url, cookie, args.connections, args.duration)
                finally:
                    fleet.stop()
                runs[setup].append(run)
                print(f"round {round_ + 1} {setup}: {run}", flush=True)
    finally:
        stack.stop()
    text = table(runs, args)
    print(text)
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        current = path.read_text()
        section = f"{START}\n## Scaling on one machine and past it\n\n{text}\n{END}"
        if START in current:
            head, _, rest = current.partition(START)
            _, _, tail = rest.partition(END)
            path.write_text(head + section + tail)
        else:
            path.write_text(current.rstrip() + "\n\n" + section + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
