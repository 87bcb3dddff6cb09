"""Real servers for tests, on free loopback ports, always stopped: uvicorn apps (in the test's event
loop), redis-server, Redis Cluster, and the oidc-provider IdP (Node)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import uvicorn

from bff import testing

IDP_DIR = Path(__file__).resolve().parents[1] / "e2e" / "idp"


# one source of free ports and in-loop servers for the project's tests and for users' (bff.testing):
# a port handed out by one must never be handed out by the other
free_port = testing.free_port
serve = testing.serve


@contextlib.asynccontextmanager
async def serve_all(*apps: Any) -> AsyncIterator[list[str]]:
    """`serve` for several apps (started in order), stopped together rather than one after the
    other: each uvicorn server takes ~0.15 s to stop (its main loop's 0.1 s tick, then shutdown's
    0.1 s grace), which for the two demo upstreams of most tests' fixtures added 0.15 s to each
    teardown. Yields their base URLs, in the order of ``apps``."""
    managers = [serve(app) for app in apps]
    urls: list[str] = []
    try:
        for manager in managers:
            urls.append(await manager.__aenter__())
        yield urls
    finally:
        stopped = await asyncio.gather(
            *(manager.__aexit__(None, None, None) for manager in managers[: len(urls)]), return_exceptions=True
        )
        for outcome in stopped:
            if isinstance(outcome, BaseException):
                raise outcome


def cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too, and kept from later
    `free_port` calls (another node of the same cluster once got it, and the cluster would not form)."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        if testing.reserve_port(port + 10000):
            return port


def missing_component(message: str) -> NoReturn:
    """A real component the tests need is absent: under CI (``CI`` set, as ``.ci/run`` does) a
    failure, never a skip that would hide it; on a developer's machine a skip with the install hint."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def first_answer(
    proc: subprocess.Popen[str], ask: Callable[[], httpx.Response], *, seconds: float = 30
) -> httpx.Response:
    """The first answer of a server process a test started: ``ask`` again while nothing listens
    yet; an `AssertionError` with the process's output when it exits, or takes over ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask()
        except httpx.TransportError:
            if proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            proc.kill()
            raise AssertionError(f"the server did not start: {proc.communicate(timeout=10)[0][-2000:]}") from None


def require_binary(name: str, how: str) -> str:
    """The binary's path, or `missing_component`."""
    path = shutil.which(name)
    if path is None:
        missing_component(f"{name} is not installed ({how})")
    return path


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.connect(("127.0.0.1", port))
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


class RedisServer:
    def __init__(self, port: int | None = None, *, cluster: bool = False, persistent: bool = False) -> None:
        self.binary = require_binary("redis-server", "apt-get install redis-server")
        self.port = port or (cluster_port() if cluster else free_port())
        self.dir = tempfile.mkdtemp(prefix="bff-redis-")
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if persistent else "no",
            "--appendfsync",
            "always",
            "--dir",
            self.dir,
        ]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Three masters from the same redis-server binary, slots assigned by redis-cli."""

    def __init__(self) -> None:
        self.nodes = [RedisServer(cluster=True) for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster:
        cli = require_binary("redis-cli", "apt-get install redis-tools")
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in self.nodes],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = subprocess.run(
                [cli, "-p", str(self.nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "cluster_state:ok" in out:
                return self
            time.sleep(0.1)
        raise TimeoutError("cluster did not become ready")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class OIDCProvider:
    """panva/oidc-provider run by Node on a free port (tests/e2e/idp/server.mjs)."""

    def __init__(self, *, redirect_uris: list[str], access_ttl: int = 60, **env: str) -> None:
        self.node = require_binary("node", "install Node.js 20+ and run npm ci in tests/e2e/idp")
        if not (IDP_DIR / "node_modules" / "oidc-provider").exists():
            missing_component("oidc-provider is not installed: run 'npm ci' in tests/e2e/idp")
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "ACCESS_TTL": str(access_ttl),
            "REDIRECT_URIS": ",".join(redirect_uris),
            **{k.upper(): v for k, v in env.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self) -> OIDCProvider:
        self.log = tempfile.NamedTemporaryFile(prefix="bff-idp-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [self.node, "server.mjs"],
            cwd=IDP_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        _wait_port(self.port, self.proc, timeout=20)
        return self

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = httpx.get(f"{self.issuer}/__test/stats", timeout=5).json()
        return result

    def refresh_grants_by_resource(self) -> dict[str, int]:
        """Successful refresh_token grants so far by their ``resource`` parameter ("" for none)."""
        result: dict[str, int] = httpx.get(f"{self.issuer}/__test/stats", timeout=5).json()["refreshGrantsByResource"]
        return result

    def revoke(self, sub: str) -> int:
        return int(httpx.post(f"{self.issuer}/__test/revoke", params={"sub": sub}, timeout=5).json()["revoked"])

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            if self.paused:
                self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
            self.log.close()
            os.unlink(self.log.name)


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    try:
        yield server.start()
    finally:
        (getattr(server, "cleanup", None) or server.stop)()


class ThreadedApps:
    """ASGI apps served on real ports from one background event loop, for synchronous callers
    (hypothesis, schemathesis). ``call`` runs a coroutine on that loop."""

    def __init__(self, *apps: Any, ports: list[int] | None = None) -> None:
        import threading

        self.ports = ports or [free_port() for _ in apps]
        self.servers = [
            uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
            for app, port in zip(apps, self.ports, strict=True)
        ]
        for server in self.servers:
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.gather(*(s.serve() for s in self.servers)))

    def start(self) -> ThreadedApps:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not all(s.started for s in self.servers):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("threaded servers did not start")
            time.sleep(0.02)
        return self

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
        self.thread.join(20)
        self.loop.close()
