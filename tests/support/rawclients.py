"""Hostile clients over raw sockets, and a real ``bff serve`` / ``bff demo`` process to aim them at
(issue 24): a WebSocket client that writes frames by hand (compressed ones included) and never
reads, an HTTP client that sends what it likes and reads when it likes, and the server's RSS and
metrics read from outside (``/proc/<pid>/status``, ``/metrics``).

Used by tests/e2e/test_hostile_clients.py, tests/e2e/test_hostile_bodies.py and scripts/bench_hostile.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
from websockets.frames import apply_mask

from bff.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_SCHEMA = "tests.support.hostile_schema:schema"
PROTOCOL = "graphql-transport-ws"

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def read_head(sock: socket.socket, chunk_size: int = 65536) -> tuple[bytes, bytes]:
    """An HTTP answer's head (status line and headers) and what arrived after it, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(chunk_size)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def rss_kib(pid: int) -> int:
    """The resident set of ``pid`` in KiB, as the kernel reports it (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    sample = f"{name}{{{wanted}}}" if wanted else name
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


class BffProcess:
    """``python -m bff serve|demo`` (or ``uvicorn --factory bff.app:app_from_env`` with the README's
    flags: ``"uvicorn"``) on a free port, in its own process (stopped with SIGTERM): ``env`` adds
    ``BFF_*`` settings to a clean environment (none inherited)."""

    def __init__(
        self, command: str = "serve", *, schema: str | None = HOSTILE_SCHEMA, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
        self.env.update(
            {
                "BFF_PUBLIC_URL": self.url,
                "BFF_COOKIE_SECURE": "false",
                "BFF_LOG_LEVEL": "warning",
                "PYTHONPATH": os.pathsep.join([str(ROOT), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                **(env or {}),
            }
        )
        if command == "uvicorn":  # as the README runs it: the factory and bff.protocols' flags
            from bff.protocols import uvicorn_flags

            limit = int(self.env.get("BFF_MAX_BODY_BYTES", 1024 * 1024))
            self.args = [sys.executable, "-m", "uvicorn", "--factory", "bff.app:app_from_env", "--port", str(self.port)]
            self.args += [*uvicorn_flags(limit), "--no-access-log"]
            if schema:
                self.env["BFF_SCHEMA"] = schema
        else:
            self.args = [sys.executable, "-m", "bff", command, "--port", str(self.port)]
            if schema:
                self.args += ["--schema", schema]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"bff-{command}-", suffix=".log", delete=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30) -> BffProcess:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bff {self.command} exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"bff {self.command} did not answer /healthz:\n{self.output()}")

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def metrics(self, headers: dict[str, str] | None = None) -> str:
        return httpx.get(f"{self.url}/metrics", headers=headers, timeout=10).text

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        self.log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log.name)

    def __enter__(self) -> BffProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def demo_sign_in(client: httpx.AsyncClient, user: str = "alice") -> str:
    """Sign ``client`` in at ``bff demo``'s development IdP; the session cookie's value."""
    start = await client.get("/auth/login", params={"return_to": "/"})
    assert start.status_code == 302, start.text
    page = await client.get(start.headers["location"])
    found = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert found is not None, page.text[:300]
    chosen = await client.post(unescape(found.group(1)), data={"user": user})
    assert chosen.status_code == 302, chosen.text
    done = await client.get(chosen.headers["location"])
    assert done.status_code == 302, done.text
    cookie = client.cookies.get("bff_session")
    assert cookie, "no session cookie after the sign-in"
    return cookie


# -- WebSocket, by hand ------------------------------------------------------------------------


def frame(
    payload: bytes, opcode: int = TEXT, *, rsv1: bool = False, fin: bool = True, length: int | None = None
) -> bytes:
    """A masked client frame; ``length`` declares another payload length than ``payload``'s (a
    header that announces more than is sent)."""
    size = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    if size < 126:
        head.append(0x80 | size)
    elif size < 65536:
        head.append(0x80 | 126)
        head += size.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += size.to_bytes(8, "big")
    key = os.urandom(4)
    return bytes(head) + key + apply_mask(payload, key)


def deflated(payload: bytes) -> bytes:
    """``payload`` compressed as permessage-deflate sends it (RFC 7692: raw deflate, the final
    empty block's 00 00 ff ff removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


class RawWebSocket:
    """A WebSocket client on a plain socket: it reads only when asked to (never, for a client that
    stops reading), and writes any frame, valid or not."""

    def __init__(self, sock: socket.socket, response: bytes) -> None:
        self.sock = sock
        self.response = response
        self._buffer = b""

    @classmethod
    def connect(
        cls,
        port: int,
        *,
        extensions: str | None = None,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
        timeout: float = 10,
    ) -> RawWebSocket:
        """Open and upgrade; ``receive_buffer`` shrinks the socket's receive buffer (``SO_RCVBUF``)
        so that a client that never reads stops taking bytes early."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        lines = [
            "GET /graphql HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {PROTOCOL}",
        ]
        if extensions:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, rest = read_head(sock, 4096)
        socket_ = cls(sock, head)
        socket_._buffer = rest
        return socket_

    @property
    def status(self) -> int:
        return int(self.response.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.response.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(frame(text.encode()))

    def send_all_or_stop(self, data: bytes, within: float) -> int:
        """Send as much of ``data`` as the server takes within ``within`` seconds; bytes sent."""
        self.sock.settimeout(within)
        sent = 0
        with contextlib.suppress(OSError):
            while sent < len(data):
                sent += self.sock.send(data[sent : sent + 65536])
        return sent

    def _read(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def read_frame(self, timeout: float = 10) -> tuple[int, bytes]:
        """The next frame from the server (opcode, payload)."""
        deadline = time.monotonic() + timeout
        first, second = self._read(2, deadline)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(self._read(2, deadline), "big")
        elif size == 127:
            size = int.from_bytes(self._read(8, deadline), "big")
        return first & 0x0F, self._read(size, deadline)

    def close_code(self, timeout: float = 10) -> int | None:
        """Read until the server's close frame (its code), or until the connection ends (None)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ConnectionError, OSError):
            while time.monotonic() < deadline:
                opcode, payload = self.read_frame(max(0.01, deadline - time.monotonic()))
                if opcode == CLOSE:
                    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def subscribe(op_id: str, query: str, variables: dict[str, Any] | None = None) -> str:
    import json

    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    return json.dumps({"id": op_id, "type": "subscribe", "payload": payload})


def connection_closed(sock: socket.socket, timeout: float = 0.2) -> bool:
    """Whether the server has ended the connection (EOF or reset), reading whatever is pending."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


@contextlib.contextmanager
def running(command: str = "serve", **env: str) -> Iterator[BffProcess]:
    with BffProcess(command, env={f"BFF_{k.upper()}": v for k, v in env.items()}) as bff:
        yield bff


async def until(predicate: Any, timeout: float, interval: float = 0.2) -> float:
    """Seconds until ``predicate()`` (sync, run in a thread) is true; fails after ``timeout``."""
    started = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic() - started


def raw_http(port: int, request: bytes, *, receive_buffer: int = 4096, source: str = "127.0.0.1") -> socket.socket:
    """A socket that sent ``request`` and reads nothing unless asked."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def post(path: str, body: bytes, port: int, accept: str = "application/json", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: {accept}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the body read so far (up to Content-Length) of the next answer."""
    sock.settimeout(timeout)
    head, body = read_head(sock)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0") or 0)
    with contextlib.suppress(OSError):
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split(" ", 2)[1]), headers, body
