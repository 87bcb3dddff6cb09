#!/usr/bin/env python
"""CPU milliseconds per viewer request, variants of `bff` alternated with the Node peer in one run.

CPU per request = the server process's CPU time (user + system, from /proc) / requests served by
wrk, so a machine shared with other work biases it far less than requests per second do. Each
variant is a set of BFF_ settings, optionally on another commit (``name@ref``: the code of that
git ref, checked out in a temporary worktree); rounds alternate every variant and the peers
(``--peer name=PEER_CLIENT``, repeatable: agent, undici or fetch; by default the tuned one);
medians are printed, and each figure's ratio to the first peer's.

    python scripts/bench_cpu.py --connections 16 --rounds 3 --duration 5 \\
        --variant httpx:BFF_UPSTREAM_CLIENT=httpx --variant aiohttp:BFF_UPSTREAM_CLIENT=aiohttp
    python scripts/bench_cpu.py --variant "before@HEAD~3:" --variant "now:"    # a change, A/B
    python scripts/bench_cpu.py --latency-ms 0 --peer agent=agent --peer undici=undici --peer fetch=fetch
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import ROOT, cpu_seconds

from bench import DEFAULT_PEERS, VIEWER, Stack, parse_peers, wrk

LADDER_START, LADDER_END = "<!-- cpu-ladder:start -->", "<!-- cpu-ladder:end -->"


def worktree(ref: str, into: Path) -> Path:
    """The code of ``ref`` in a detached worktree (its ``bff`` package comes first on PYTHONPATH)."""
    path = into / re.sub(r"[^\w.-]", "_", ref)
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each variant is measured")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--variant", action="append", default=[], help="name[@git-ref]:VAR=value,VAR=value")
    parser.add_argument(
        "--peer",
        action="append",
        default=None,
        help="name=PEER_CLIENT (agent|undici|fetch), repeatable; the first is the reference of the ratios",
    )
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md's CPU ladder")
    args = parser.parse_args()
    args.peers = parse_peers(",".join(args.peer)) if args.peer else {"peer": DEFAULT_PEERS["tuned"]}
    reference = f"peer-{next(iter(args.peers))}" if args.peer else "peer"
    trees = Path(tempfile.mkdtemp(prefix="bff-bench-"))
    made: list[Path] = []
    variants: dict[str, dict[str, str]] = {}
    try:
        for spec in args.variant or ["default:"]:
            label, _, assignments = spec.partition(":")
            name, _, ref = label.partition("@")
            variants[name] = dict(a.split("=", 1) for a in assignments.split(",") if a)
            if ref:
                tree = worktree(ref, trees)
                if tree not in made:
                    made.append(tree)
                variants[name]["PYTHONPATH"] = str(tree)
        # `python -m bff` puts its working directory first on sys.path: run it from one without bff
        os.chdir(trees)
        results, errors = measure(args, variants)
    finally:
        for path in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)
    connections = args.connections or [16]
    lines = [
        f"CPU ms per viewer request (median of {args.rounds} alternated rounds, {args.latency_ms:g} ms upstreams)",
        "",
        "| variant | "
        + " | ".join(f"c={c}" for c in connections)
        + " | "
        + " | ".join(f"/{reference} c={c}" for c in connections)
        + " |",
        "| --- |" + " --- |" * (2 * len(connections)),
    ]
    peer_names = [f"peer-{name}" for name in args.peers] if args.peer else ["peer"]
    for name in [*variants, *peer_names]:
        medians = [statistics.median(results[(name, c)]) for c in connections]
        ratios = [m / statistics.median(results[(reference, c)]) for m, c in zip(medians, connections, strict=True)]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{m:.2f}" for m in medians)
            + " | "
            + " | ".join(f"{r:.2f}" for r in ratios)
            + " |"
        )
    for (name, c), values in sorted(results.items()):
        failed = f", {errors[(name, c)]} failed responses" if errors.get((name, c)) else ""
        lines.append(f"<!-- {name} c={c}: {[round(v, 2) for v in values]}{failed} -->")
    print("\n".join(lines))
    if args.write:
        write_section(args, lines)
    return 0


def measure(
    args: argparse.Namespace, variants: dict[str, dict[str, str]]
) -> tuple[dict[tuple[str, int], list[float]], dict[tuple[str, int], int]]:
    connections = args.connections or [16]
    stack = Stack(args.latency_ms, args.peers)
    stack.start()
    results: dict[tuple[str, int], list[float]] = {}
    errors: dict[tuple[str, int], int] = {}
    labels = {name: f"peer-{name}" if args.peer else "peer" for name in stack.peers}
    try:
        peer_headers = {"Authorization": f"Bearer {stack.user_token}"}
        for name in stack.peers:
            wrk(stack.peer_url(name), VIEWER, peer_headers, 16, args.warmup)
        for _ in range(args.rounds):
            for name, extra in variants.items():
                stack.start_bff(1, extra)
                cookie = stack.sign_in()
                url = f"http://127.0.0.1:{stack.bff_port}/graphql"
                headers = {"Cookie": f"bff_session={cookie}", "X-CSRF": "1"}
                assert stack.bff is not None
                wrk(url, VIEWER, headers, 16, args.warmup)
                for c in connections:
                    before = cpu_seconds(stack.bff.pid)
                    run = wrk(url, VIEWER, headers, c, args.duration)
                    used = cpu_seconds(stack.bff.pid) - before
                    results.setdefault((name, c), []).append(1000 * used / max(1.0, run.rps * args.duration))
                    errors[(name, c)] = errors.get((name, c), 0) + run.errors
            for name, peer in stack.peers.items():
                label = labels[name]
                for c in connections:
                    before = cpu_seconds(peer.pid)
                    run = wrk(stack.peer_url(name), VIEWER, peer_headers, c, args.duration)
                    results.setdefault((label, c), []).append(
                        1000 * (cpu_seconds(peer.pid) - before) / max(1.0, run.rps * args.duration)
                    )
                    errors[(label, c)] = errors.get((label, c), 0) + run.errors
    finally:
        stack.stop()
    return results, errors


def write_section(args: argparse.Namespace, lines: list[str]) -> None:
    """Replace (or append) BENCHMARKS.md's CPU ladder section; the rest of the file stays."""
    command = "python scripts/bench_cpu.py " + " ".join(
        f'"{a}"' if " " in a or "@" in a else a for a in sys.argv[1:] if a != "--write"
    )
    section = "\n".join(
        [
            LADDER_START,
            "## CPU per viewer request: the issue-15 ladder",
            "",
            f"`{command}` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores shared by everything). "
            "CPU milliseconds per request = the server process's user+system CPU / requests served (1 worker, "
            "Redis sessions); each step is a commit (or settings) of this repository, alternated with the "
            f"graphql-yoga peer ({', '.join(f'{k}: PEER_CLIENT={v}' for k, v in args.peers.items())}) in one run; "
            "medians, the single values in the comments.",
            "",
            *lines[2:],
            LADDER_END,
        ]
    )
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    if LADDER_START in text:
        before, _, rest = text.partition(LADDER_START)
        _, _, after = rest.partition(LADDER_END)
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
