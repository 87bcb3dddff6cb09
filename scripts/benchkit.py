"""What both benchmarks do alike: start demo upstreams and `bff serve` processes, wait for them,
stop them. Importing it also makes the project root importable (for tests.support)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wait_http(url: str, timeout: float = 30) -> None:
    """Until ``url`` answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.1)
    raise TimeoutError(url)


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its live children (the workers of ``bff serve --workers N``)."""
    total = 0.0
    for task in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in path.read_text().split()]
    return [grandchild for child in found for grandchild in [child, *_children(child)]]


def demo_upstream(name: str, port: int, issuer: str, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bff", "demo-upstream", name, "--port", str(port), "--issuer", issuer, *options]
    )


def bff_serve(port: int, settings: dict[str, str], *, workers: int = 1) -> subprocess.Popen[bytes]:
    """`bff serve` on ``port`` with ``settings`` (BFF_* variables) on top of the environment."""
    env = {
        **os.environ,
        "BFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BFF_COOKIE_SECURE": "false",
        "BFF_LOG_LEVEL": "warning",
        **settings,
    }
    command = [sys.executable, "-m", "bff", "serve", "--port", str(port), "--workers", str(workers)]
    return subprocess.Popen([*command, "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL)


def upstream_settings(ports: dict[str, int]) -> dict[str, str]:
    return {
        "BFF_UPSTREAMS__ACCOUNTS__URL": f"http://127.0.0.1:{ports['accounts']}",
        "BFF_UPSTREAMS__CATALOG__URL": f"http://127.0.0.1:{ports['catalog']}/graphql",
    }


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    procs.clear()


def wait_stack(bff_ports: list[int], upstream_ports: dict[str, int]) -> list[str]:
    """Until every replica and upstream answers; the replicas' base URLs."""
    for port in bff_ports:
        wait_http(f"http://127.0.0.1:{port}/healthz")
    for port in upstream_ports.values():
        wait_http(f"http://127.0.0.1:{port}/")
    return [f"http://127.0.0.1:{p}" for p in bff_ports]


async def sign_in_users(urls: list[str], count: int) -> list[str]:
    """``count`` demo users signed in round-robin over the replicas; their session cookies."""
    from tests.support.browser import browser_login

    cookies: list[str] = []
    for i in range(count):
        async with httpx.AsyncClient(timeout=30) as browser:
            await browser_login(browser, urls[i % len(urls)], f"user{i}")
            cookies.append(browser.cookies["bff_session"])
    return cookies


def introspecting_upstreams(issuer: str, procs: list[subprocess.Popen[bytes]]) -> dict[str, int]:
    """The demo upstreams, validating tokens by introspection at ``issuer`` (the e2e oidc-provider's
    resource-server client); their processes join ``procs``; their ports."""
    from tests.support.servers import free_port

    ports = {"accounts": free_port(), "catalog": free_port()}
    introspection = ("--introspection-client-id", "resource-server", "--introspection-client-secret", "resource-secret")
    for name, port in ports.items():
        procs.append(demo_upstream(name, port, issuer, *introspection))
    return ports


def replica_settings(issuer: str, redis_url: str, upstream_ports: dict[str, int], secret: str) -> dict[str, str]:
    """The BFF_ settings every replica of a refresh benchmark shares (the e2e IdP's ``bff`` client)."""
    return {
        "BFF_OIDC_ISSUER": issuer,
        "BFF_OIDC_CLIENT_ID": "bff",
        "BFF_OIDC_CLIENT_SECRET": "bff-secret",
        "BFF_SESSION_STORE": redis_url,
        "BFF_SESSION_SECRET": secret,
        **upstream_settings(upstream_ports),
    }


def wrk_stats(
    url: str, query: str, headers: dict[str, str], connections: int, duration: float
) -> tuple[int, float, float, float, int]:
    """One wrk run (one thread) of ``query`` POSTed to ``url``: (requests, requests/s, p50 ms,
    p99 ms, failures). A failure is a socket error, a non-200 status or an answer with ``errors``.
    Read from wrk's own ``done`` summary: ``response`` runs in each thread's Lua state and ``done``
    in the main one, so the count is read back from the threads (a counter of the main state stays
    0), and the percentiles come from ``latency:percentile`` (parsing wrk's text can take the
    "+/- Stdev" column, ``89.50%``, for the 50th percentile)."""
    import json
    import tempfile

    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps({'query': query}))}"]
    lines += [
        f'wrk.headers["{k}"] = {json.dumps(v)}' for k, v in {"Content-Type": "application/json", **headers}.items()
    ]
    lines += [
        "local threads = {}",
        "function setup(thread) table.insert(threads, thread) end",
        "function init(args) bad = 0 firstbad = '' end",
        "function response(status, headers, body)"
        " if status ~= 200 or string.find(body, '\"errors\"') then bad = bad + 1"
        " if firstbad == '' then firstbad = status .. ' ' .. string.gsub(string.sub(body, 1, 300), '%s+', ' ') end end end",
        "function done(summary, latency, requests)",
        "  local e = summary.errors",
        "  local failed = e.connect + e.read + e.write + e.timeout",
        "  if failed > 0 then io.write(string.format('SOCKET connect=%d read=%d write=%d timeout=%d\\n',"
        " e.connect, e.read, e.write, e.timeout)) end",
        "  for _, thread in ipairs(threads) do failed = failed + thread:get('bad')"
        "   local first = thread:get('firstbad') if first ~= '' then io.write('ANSWER ' .. first .. '\\n') end end",
        '  io.write(string.format("STATS %d %d %d %d %d\\n", summary.requests, summary.duration,'
        " latency:percentile(50), latency:percentile(99), failed))",
        "end",
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write("\n".join(lines))
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        ).stdout
    for line in out.splitlines():
        if line.startswith(("SOCKET ", "ANSWER ")):  # what failed, for the reader of the run
            print(f"wrk {url} ({connections} connections): {line}", file=sys.stderr, flush=True)
    stats = next(line for line in out.splitlines() if line.startswith("STATS "))
    requests, micros, p50, p99, bad = (int(v) for v in stats.split()[1:])
    return requests, requests / max(micros / 1e6, 1e-9), p50 / 1000, p99 / 1000, bad
