"""`H1Upstream`, our HTTP/1.1 keep-alive pool, against a raw socket server that answers exactly the
bytes a test scripts: keep-alive, stale connections, the framings of an answer, timeouts, limits."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bff.errors import UpstreamError, UpstreamTimeout
from bff.upstream import RestClient
from bff.upstream.aio import AiohttpUpstream
from bff.upstream.h1 import H1Upstream

#: what the scripted server answers to one request: the raw answer, None to close without one, or
#: HANG to keep the connection open without answering
Script = Callable[[int, int, bytes], bytes | None]


HANG = b""


def answer(body: bytes = b'{"ok":true}', *, status: str = "200 OK", headers: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode()
        + body
    )


class RawServer:
    """A loopback server reading whole requests (head and Content-Length body) and answering what
    ``script(connection number, request number on it, request)`` returns."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection, number = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                number += 1
                reply = self.script(connection, number, request)
                if reply is None:
                    break
                if reply == HANG:
                    await asyncio.sleep(30)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., tuple[RawServer, H1Upstream]]]:
    opened: list[tuple[RawServer, H1Upstream]] = []

    async def make(script: Script, *, timeout: float = 2.0, max_connections: int = 10) -> tuple[RawServer, H1Upstream]:
        server = RawServer(script)
        url = await server.__aenter__()
        http = H1Upstream(url, timeout=timeout, max_connections=max_connections)
        opened.append((server, http))
        return server, http

    yield make  # type: ignore[misc]
    for server, http in opened:
        await http.aclose()
        await server.__aexit__()


async def test_one_connection_serves_requests_one_after_another(scripted) -> None:  # type: ignore[no-untyped-def]
    server, http = await scripted(lambda c, n, r: answer(b'{"n":%d}' % n))
    for n in (1, 2, 3):
        got = await http.request("GET", "/x")
        assert got.json() == {"n": n}
    assert server.connections == 1


async def test_a_connection_closed_while_idle_is_not_reused(scripted) -> None:  # type: ignore[no-untyped-def]
    server, http = await scripted(lambda c, n, r: answer(headers="Connection: close\r\n"))
    await http.request("GET", "/x")
    await http.request("GET", "/x")
    assert server.connections == 2


async def test_a_stale_connection_is_retried_for_idempotent_methods_only(scripted) -> None:  # type: ignore[no-untyped-def]
    # every connection answers once, then closes at its second request without a byte (a server
    # whose keep-alive timeout fired just as the request went out)
    server, http = await scripted(lambda c, n, r: answer() if n == 1 else None)
    await http.request("GET", "/a")
    got = await http.request("GET", "/b")  # sent on the reused connection, then on a new one
    assert got.status_code == 200
    assert server.connections == 2
    client = RestClient("accounts", http, None)
    with pytest.raises(UpstreamError, match="failed"):
        await client.post_json("/c", {"once": True})  # not sent twice: it may have been acted on
    assert sum(b"POST /c" in request for request in server.requests) == 1


async def test_answer_framings(scripted) -> None:  # type: ignore[no-untyped-def]
    packed = gzip.compress(b'{"z":"gzip"}')
    deflated = zlib.compress(b'{"z":"deflate"}')

    def script(connection: int, number: int, request: bytes) -> bytes | None:
        path = request.split(b" ")[1]
        if path == b"/chunked":
            return b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
        if path == b"/gzip":
            return answer(packed, headers="Content-Encoding: gzip\r\n")
        if path == b"/deflate":
            return answer(deflated, headers="Content-Encoding: deflate\r\n")
        if path == b"/interim":
            return b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer(b'{"final":1}')
        if path == b"/empty":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        if path == b"/head":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        if path == b"/unframed":
            return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b'{"until":"close"}'
        return None

    server, http = await scripted(script)
    assert (await http.request("GET", "/chunked")).json() == {"a": 1}
    assert (await http.request("GET", "/gzip")).json() == {"z": "gzip"}
    assert (await http.request("GET", "/deflate")).json() == {"z": "deflate"}
    assert (await http.request("GET", "/interim")).json() == {"final": 1}
    assert (await http.request("GET", "/empty")).status_code == 204
    assert (await http.request("HEAD", "/head")).content == b""
    assert server.connections == 1  # all on one connection so far; HEAD's is not reused
    unframed = asyncio.ensure_future(http.request("GET", "/unframed"))
    await asyncio.sleep(0.2)
    assert not unframed.done()  # an answer without a length ends with its connection
    server.server.close()  # type: ignore[union-attr]
    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__.startswith("RawServer._handle"):  # type: ignore[union-attr]
            task.cancel()  # the handler closes its writer: the answer ends
    assert (await unframed).json() == {"until": "close"}


async def test_a_malformed_answer_is_an_upstream_error_and_its_connection_is_dropped(scripted) -> None:  # type: ignore[no-untyped-def]
    server, http = await scripted(lambda c, n, r: b"HTTP/1.1 2xx Nope\r\n\r\n" if c == 1 else answer())
    client = RestClient("accounts", http, None)
    with pytest.raises(UpstreamError):
        await client.get_json("/bad")
    assert (await client.get_json("/good")) == {"ok": True}
    assert server.connections == 2


async def test_a_timeout_closes_the_connection_so_a_late_answer_reaches_nobody(scripted) -> None:  # type: ignore[no-untyped-def]
    late: list[bytes] = []

    def script(connection: int, number: int, request: bytes) -> bytes | None:
        if b"/slow" in request:
            late.append(request)
            return HANG  # the connection stays open, unanswered, until the client gives up
        return answer(b'{"fresh":true}')

    _server, http = await scripted(script, timeout=0.3)
    client = RestClient("accounts", http, None)
    with pytest.raises(UpstreamTimeout):
        await client.get_json("/slow")
    assert (await client.get_json("/fast")) == {"fresh": True}


async def test_connections_are_limited_and_waiting_requests_get_one(scripted) -> None:  # type: ignore[no-untyped-def]
    server, http = await scripted(lambda c, n, r: answer(b'{"n":%d}' % n), max_connections=2)
    answers = await asyncio.gather(*(http.request("GET", f"/{i}") for i in range(10)))
    assert all(got.status_code == 200 for got in answers)
    assert server.connections <= 2


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(scripted) -> None:  # type: ignore[no-untyped-def]
    server, http = await scripted(lambda c, n, r: answer())
    client = RestClient("accounts", http, None)
    for name, value in (("X-Evil", "a\r\nX-Injected: 1"), ("X-Evil\r\nX-Injected", "1"), ("Bad:Name", "1")):
        with pytest.raises(UpstreamError):
            await client._request("GET", "/x", headers={name: value})
    assert server.requests == []


async def test_paths_and_queries_are_escaped_and_params_appended(scripted) -> None:  # type: ignore[no-untyped-def]
    server, http = await scripted(lambda c, n, r: answer())
    await http.request("GET", "/users/a b/é?sort=name", params={"q": "x y&z", "n": 3})
    await http.request("POST", "/raw", content=b"abc", headers={"Content-Type": "text/plain"})
    await http.request("GET", "/p/1%2C2?csv=p%2Cq&amp=a%26b&t=%3a", params={"list": "a,b", "plus": "1+1"})
    first, second, third = server.requests
    assert first.startswith(b"GET /users/a%20b/%C3%A9?sort=name&q=x+y%26z&n=3 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in first
    assert second.startswith(b"POST /raw HTTP/1.1\r\n") and second.endswith(b"\r\n\r\nabc")
    assert b"Content-Length: 3\r\n" in second and b"Content-Type: text/plain\r\n" in second
    # as aiohttp (yarl) sent them: escapes of plain characters decoded, of delimiters kept
    assert third.startswith(b"GET /p/1,2?csv=p,q&amp=a%26b&t=:&list=a,b&plus=1%2B1 HTTP/1.1\r\n")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    raw = RawServer(lambda c, n, r: answer(b'{"tls":true}'))
    server = await asyncio.start_server(raw._handle, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    http = H1Upstream(f"https://localhost:{port}", timeout=2, max_connections=2)
    try:
        with pytest.raises(UpstreamError, match="unreachable"):  # self-signed: not trusted by default
            await RestClient("accounts", http, None).get_json("/x")
        trusting = ssl.create_default_context(cafile=str(cert))
        http._ssl = trusting  # what a deployment's CA bundle would do
        assert (await http.request("GET", "/x")).json() == {"tls": True}
        assert raw.requests[-1].startswith(b"GET /x HTTP/1.1\r\nHost: localhost:")
    finally:
        await http.aclose()
        server.close()


async def test_request_targets_are_those_aiohttp_sends() -> None:
    """The same request line as the aiohttp client it replaces, for the URLs resolvers and sources
    build (escaped delimiters, lists, JSON in a parameter, non-ASCII, spaces)."""
    calls: list[tuple[str, dict[str, object] | None]] = [
        ("/p/1%2C2?csv=p%2Cq&amp=a%26b&t=%3a", {"list": "a,b", "plus": "1+1"}),
        ("/users/a b/é?sort=name", {"q": "x y&z", "n": 3}),
        ("/search", {"q": '{"x":[1,2]}', "slash": "a/b?c", "tilde": "~'!*()$"}),
        ("orders/%7Bid%7D;v=1", None),
        ("/a//b/./c", {"empty": ""}),
        ("/a/b/../../../c/.", None),
        ("/a/%2E%2E/b", None),
    ]
    lines: dict[type, list[bytes]] = {}
    for cls in (AiohttpUpstream, H1Upstream):
        raw = RawServer(lambda c, n, r: answer())
        url = await raw.__aenter__()
        http = cls(url, timeout=2, max_connections=2)
        try:
            for path, params in calls:
                await http.request("GET", path, params=params)
        finally:
            await http.aclose()
            await raw.__aexit__()
        lines[cls] = [request.split(b"\r\n")[0] for request in raw.requests]
    assert lines[H1Upstream] == lines[AiohttpUpstream]


async def test_idle_connections_are_not_reused_near_the_servers_keep_alive_timeout(
    scripted,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    # a server that says how long it keeps a connection: reused only up to a second before that
    server, http = await scripted(lambda c, n, r: answer(headers="Keep-Alive: timeout=2\r\n"))
    await http.request("POST", "/a", json={})
    await asyncio.sleep(0.5)
    await http.request("POST", "/b", json={})  # idle 0.5 s: reused
    assert server.connections == 1
    await asyncio.sleep(1.2)
    await http.request("POST", "/c", json={})  # idle 1.2 s, over 2 - 1: a new connection
    assert server.connections == 2
    # a server that says nothing: IDLE_SECONDS (under uvicorn's and Node's 5 s)
    monkeypatch.setattr("bff.upstream.h1.IDLE_SECONDS", 0.3)
    quiet, http = await scripted(lambda c, n, r: answer())
    await http.request("POST", "/a", json={})
    await asyncio.sleep(0.4)
    await http.request("POST", "/b", json={})
    assert quiet.connections == 2
