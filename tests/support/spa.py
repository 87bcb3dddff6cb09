"""The example SPA's dev set-ups for tests: `bff demo` and Vite's dev server as subprocesses on free
ports, waited for over HTTP and always stopped (their whole process group: npx starts node)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.servers import missing_component, require_binary

ROOT = Path(__file__).resolve().parents[2]
SPA_DIR = ROOT / "examples" / "spa"
MANIFEST = SPA_DIR / "src" / "gql" / "persisted-documents.json"
ARTIFACTS = ROOT / "test-artifacts" / "spa"


def require_spa_packages() -> str:
    """npx's path, once examples/spa's packages are installed. Missing: a failure under CI, else a skip."""
    require_binary("node", "install Node.js 20+ and run 'npm ci' in examples/spa")
    npx = require_binary("npx", "install npm and run 'npm ci' in examples/spa")
    if not (SPA_DIR / "node_modules" / "vite" / "package.json").exists():
        missing_component("the example SPA's packages are not installed: run 'npm ci' in examples/spa")
    return npx


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any BFF_ or VITE_ setting (a stray one would change the set-up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BFF_", "VITE_"))}
    env.update(extra)
    return env


class Background:
    """A subprocess in its own process group, logging to a temporary file, ready when ``ready_url``
    answers below 500."""

    def __init__(self, name: str, args: list[str], *, cwd: Path, env: dict[str, str], ready_url: str) -> None:
        self.name = name
        self.args = args
        self.cwd = cwd
        self.env = env
        self.ready_url = ready_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"bff-{name}-", suffix=".log", delete=False)

    def start(self, timeout: float = 60) -> Background:
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()  # never leave a process or an open log behind a failed start
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer at {self.ready_url}:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
            self.proc = None
        self.log.close()
        os.unlink(self.log.name)


def bff_demo(port: int, *, access_ttl: int, **settings: str) -> Background:
    """``python -m bff demo`` with only the given BFF_ settings in its environment."""
    return Background(
        "bff-demo",
        [sys.executable, "-m", "bff", "demo", "--port", str(port), "--access-ttl", str(access_ttl)],
        cwd=ROOT,
        env=clean_env(**{f"BFF_{k.upper()}": v for k, v in settings.items()}),
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )


def vite(npx: str, port: int, **env: str) -> Background:
    """Vite's dev server for examples/spa on 127.0.0.1:``port`` (BFF_URL: proxy mode; VITE_BFF_ORIGIN: own origin)."""
    return Background(
        "vite",
        [npx, "--no-install", "vite", "--port", str(port), "--strictPort", "--host", "127.0.0.1"],
        cwd=SPA_DIR,
        env=clean_env(**env),
        ready_url=f"http://127.0.0.1:{port}/",
    )


_SAMPLE = re.compile(r'^bff_token_refresh_total\{outcome="(?P<outcome>[^"]+)"\}\s+(?P<value>\S+)$', re.M)


def refresh_counts(bff_url: str) -> dict[str, float]:
    """``bff_token_refresh_total`` by outcome, from the BFF's /metrics."""
    text = httpx.get(f"{bff_url}/metrics", timeout=5).text
    return {m["outcome"]: float(m["value"]) for m in _SAMPLE.finditer(text)}
