#!/usr/bin/env python
"""User-space instructions per viewer request of one `bff serve` worker, counted by valgrind's
callgrind: an A/B of code changes that does not move with the machine's load.

CPU time per request (`scripts/bench_cpu.py`) is what the issue asks for, but on a shared 2-core
machine it moved by 5-10 % between rounds of the same code, more than most single levers of issue 26
change it. The instructions a worker executes for a fixed number of requests moved by about 1 %
between runs of the same code here, whatever else ran. What they do not count: the kernel's work for
the worker's system calls (about a third of its CPU time on the viewer query, from /proc), and the
cost of cache misses. So a lever is chosen by its instructions and proven by CPU time.

Each variant (``name@ref``: the ``bff`` package of a git ref, in a temporary worktree; no ref: this
tree's) serves the stack of scripts/bench.py (development IdP, Redis, demo upstreams answering at
once) under ``valgrind --tool=callgrind --instr-atstart=no``; after a warm-up, counting is switched on
for ``--requests`` viewer requests at 16 concurrent (one signed-in session) and off again. Sessions
are read from the process's cache for 5 s (``BFF_SESSION_CACHE_SECONDS=5``): under valgrind a worker
serves ~25 requests/s, and the default 0.25 s would make every fifth request a Redis read.

    python scripts/bench_instructions.py --variant "before@HEAD~1" --variant now
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu import worktree
from benchkit import ROOT, wait_http

from bench import VIEWER, Stack


async def _load(url: str, cookie: str, requests: int, concurrency: int = 16) -> None:
    body = json.dumps({"query": VIEWER})
    headers = {"Content-Type": "application/json", "Cookie": f"bff_session={cookie}"}
    left = requests
    async with httpx.AsyncClient(timeout=300) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                answer = await client.post(url, content=body, headers=headers)
                if answer.status_code != 200 or b'"errors"' in answer.content:
                    raise RuntimeError(f"a failed answer: {answer.status_code} {answer.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def instructions(stack: Stack, code: Path | None, requests: int, out: Path) -> int:
    """The instructions one worker (``code``'s bff package, else this tree's) executed for
    ``requests`` viewer requests."""
    env = {
        **os.environ,
        **stack.settings(),
        "BFF_PUBLIC_URL": f"http://127.0.0.1:{stack.bff_port}",
        "BFF_COOKIE_SECURE": "false",
        "BFF_LOG_LEVEL": "warning",
        "BFF_SESSION_CACHE_SECONDS": "5",
    }
    if code is not None:
        env["PYTHONPATH"] = str(code)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bff",
        "serve",
        "--port",
        str(stack.bff_port),
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]
    worker = subprocess.Popen(
        command,
        env=env,
        cwd=code or tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.bff = worker
    try:
        wait_http(f"http://127.0.0.1:{stack.bff_port}/healthz", timeout=120)
        cookie = stack.sign_in()
        url = f"http://127.0.0.1:{stack.bff_port}/graphql"
        asyncio.run(_load(url, cookie, 200))  # warm-up: imports, caches, connections, the plan
        subprocess.run(["callgrind_control", "--instr=on", str(worker.pid)], check=True, capture_output=True)
        asyncio.run(_load(url, cookie, requests))
        subprocess.run(["callgrind_control", "--instr=off", str(worker.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "--dump", str(worker.pid)], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the dump is written by the worker, a moment later
            counts = [
                int(found.group(1))
                for dump in out.parent.glob(out.name + ".*")
                if (found := re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.MULTILINE))
            ]
            if any(counts):
                return sum(counts)
            time.sleep(0.5)
        raise RuntimeError("callgrind wrote no counts")
    finally:
        stack.stop_bff()
        for dump in out.parent.glob(out.name + "*"):
            dump.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], help="name[@git-ref], repeatable")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant, alternated")
    args = parser.parse_args()
    trees = Path(tempfile.mkdtemp(prefix="bff-bench-instr-"))
    made: list[Path] = []
    codes: dict[str, Path | None] = {}
    for spec in args.variant or ["now"]:
        name, _, ref = spec.partition("@")
        codes[name] = worktree(ref, trees) if ref else None
        if ref and codes[name] not in made:
            made.append(codes[name])  # type: ignore[arg-type]
    stack = Stack(0.0)  # its Node peers idle meanwhile
    stack.start()
    results: dict[str, list[float]] = {}
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        for _ in range(args.rounds):
            for name, code in codes.items():
                count = instructions(stack, code, args.requests, trees / f"callgrind.{name}")
                results.setdefault(name, []).append(count / args.requests)
                print(f"{name}: {count / args.requests / 1000:.0f} k instructions per request", flush=True)
    finally:
        stack.stop()
        for path in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)
    first = min(results[next(iter(results))])
    print(f"\nUser-space instructions per viewer request ({args.requests} requests, 16 concurrent), {started}\n")
    print("| variant | k instructions / request | vs first |\n| --- | ---: | ---: |")
    for name, values in results.items():
        best = min(values)
        print(f"| {name} | {best / 1000:.0f} | {best / first - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
