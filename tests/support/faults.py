"""A small HTTP forward proxy for fault injection in front of the IdP, for one replica at a time.

The replica's OIDC client sends its requests through it (``httpx.AsyncHTTPTransport(proxy=...)``);
requests to ``/token`` can be passed, held until released (a blackhole: accepted, never answered;
dropped if the client closes the connection meanwhile), answered late (forwarded at once so the
IdP really rotates, the answer withheld for a while), or refused (connection closed unanswered).
Everything else passes. Real sockets, real IdP: only the timing is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from tests.support.servers import free_port


@dataclass
class FaultProxy:
    mode: str = "pass"  # pass | hold | late | refuse
    late_seconds: float = 0.0
    token_requests: int = 0
    answered: int = 0
    dropped: int = 0  # held requests whose client went away before they were released
    released: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(proxy=self.url)

    def release(self) -> None:
        self.released.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [tuple(line.split(": ", 1)) for line in lines[1:] if ": " in line]
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            body = await reader.readexactly(length) if length else b""
            is_token = urlsplit(target).path.endswith("/token")
            if is_token:
                self.token_requests += 1
                if self.mode == "refuse":
                    return
                if self.mode == "hold":
                    # held until released, or dropped if the client gives up meanwhile (as a proxy
                    # does with a request it has not sent on yet: nothing reaches the IdP)
                    gone = asyncio.ensure_future(reader.read(1))
                    released = asyncio.ensure_future(self.released.wait())
                    await asyncio.wait({gone, released}, return_when=asyncio.FIRST_COMPLETED)
                    released.cancel()
                    if gone.done() and not gone.result():
                        self.dropped += 1
                        return
                    gone.cancel()
            forward = {k: v for k, v in headers if k.lower() not in ("proxy-connection", "connection", "host")}
            async with httpx.AsyncClient(timeout=60) as client:
                response = await client.request(method, target, headers=forward, content=body)
            if is_token and self.mode == "late":
                await asyncio.sleep(self.late_seconds)
            self.answered += int(is_token)
            out = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
            for key, value in response.headers.items():
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                    out.append(f"{key}: {value}")
            out += [f"content-length: {len(response.content)}", "connection: close", "", ""]
            writer.write("\r\n".join(out).encode("latin-1") + response.content)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError, httpx.HTTPError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def fault_proxy() -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy()
    server = await asyncio.start_server(proxy._handle, "127.0.0.1", proxy.port)
    try:
        yield proxy
    finally:
        proxy.release()
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
