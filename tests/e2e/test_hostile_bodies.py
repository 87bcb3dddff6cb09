"""Hostile clients, documents and bodies (issue 24, findings 3 and 4): the APQ cache registers only
valid documents and is bounded by size; every route that reads a body refuses an oversized one, and a
100 MiB body costs no memory. Real ``bff serve`` / ``bff demo`` processes over real sockets, memory read
from outside (``/proc/<pid>/status``). The rest of the findings are in ``test_hostile_clients.py``
(split so the two halves run on separate test workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import httpx
import pytest

from tests.support.rawclients import raw_http, read_response, running

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


# -- 3. the APQ cache -----------------------------------------------------------------------------


def _apq(query: str | None, digest: str) -> dict[str, Any]:
    body: dict[str, Any] = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    if query is not None:
        body["query"] = query
    return body


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_an_apq_flood_pins_nothing() -> None:
    """Anonymous registrations of 1 MB documents register nothing: RSS, read from outside, stops
    growing once the allocator has seen a few (it grew by about 1 MB per registration, for good: 70
    more would have been 70 MiB);
    an invalid document is not served by its hash afterwards; a valid one is; and valid
    documents of 4 KB (700 of them, 2.9 MB) keep the cache within its size (2 MiB): the first ones are
    gone (a cache bounded by count, 2,000, kept them all)."""
    with running() as bff:
        async with httpx.AsyncClient(base_url=bff.url, timeout=60) as client:
            await client.post("/graphql", json={"query": "{ ok }"})
            gate = asyncio.Semaphore(4)

            async def register(i: int) -> None:
                query = "{ ok }\n#" + f"{i:08d}" * 125_000  # 1 MB
                async with gate:
                    answer = await client.post("/graphql", json=_apq(query, _sha(query)))
                assert answer.json() == {"data": {"ok": True}}

            start = bff.rss_kib()
            await asyncio.gather(*(register(i) for i in range(30)))
            await asyncio.sleep(0.5)
            warm = bff.rss_kib()
            await asyncio.gather(*(register(i) for i in range(30, 100)))
            await asyncio.sleep(0.5)
            end = bff.rss_kib()
            big = "{ ok }\n#" + f"{0:08d}" * 125_000
            by_hash = (await client.post("/graphql", json=_apq(None, _sha(big)))).json()
            assert by_hash["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"

            invalid = "{ nope }"
            first = (await client.post("/graphql", json=_apq(invalid, _sha(invalid)))).json()
            assert first["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
            again = (await client.post("/graphql", json=_apq(None, _sha(invalid)))).json()
            assert again["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"

            valid = "query Valid { ok }"
            assert (await client.post("/graphql", json=_apq(valid, _sha(valid)))).json() == {"data": {"ok": True}}
            assert (await client.post("/graphql", json=_apq(None, _sha(valid)))).json() == {"data": {"ok": True}}

            documents = ["{ ok }\n#" + f"{i:06d}" * 680 for i in range(700)]  # 2.9 MB
            for chunk in range(0, len(documents), 50):
                await asyncio.gather(
                    *(client.post("/graphql", json=_apq(d, _sha(d))) for d in documents[chunk : chunk + 50])
                )
            oldest = (await client.post("/graphql", json=_apq(None, _sha(documents[0])))).json()
            newest = (await client.post("/graphql", json=_apq(None, _sha(documents[-1])))).json()
    assert (end - warm) / 1024 < 35, f"70 more registrations grew RSS by {(end - warm) / 1024:.0f} MiB"
    assert (end - start) / 1024 < 75, f"100 registrations grew RSS by {(end - start) / 1024:.0f} MiB"
    assert oldest["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert newest == {"data": {"ok": True}}


# -- 4. bodies ------------------------------------------------------------------------------------

BODY_ROUTES = ["/auth/native/token", "/auth/backchannel-logout", "/auth/logout", "/graphql", "/no/such/route"]
#: the routes that read a body (the others answer without reading one)
READERS = {"/auth/native/token", "/auth/backchannel-logout", "/graphql"}


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_every_route_refuses_an_oversized_body(path: str) -> None:
    """A declared Content-Length over BFF_MAX_BODY_BYTES is a 413 before a byte of the body is
    read; a chunked body is a 413 as soon as it passes the limit; both are JSON answers."""
    with running("demo") as bff:
        sock = raw_http(
            bff.port,
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{bff.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {100 * MiB}\r\n\r\n"
            ).encode(),
            receive_buffer=1 << 20,
        )
        try:
            status, headers, body = read_response(sock, timeout=5)
        finally:
            sock.close()
        assert status == 413, (status, body[:200])
        assert headers["content-type"].startswith("application/json")
        assert b"exceeds" in body
        if path not in READERS:
            return  # a route that answers without reading the body never sees a chunked one

        media = "application/x-www-form-urlencoded" if path == "/auth/backchannel-logout" else "application/json"
        sock = raw_http(
            bff.port,
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{bff.port}\r\nContent-Type: {media}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode(),
            receive_buffer=1 << 20,
        )
        try:
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                for _ in range(48):  # 3 MiB
                    sock.sendall(chunk)
            status, headers, body = read_response(sock, timeout=5)
        finally:
            sock.close()
        assert status == 413, (status, body[:200])
        assert b"exceeds" in body


def test_a_100_mib_body_costs_no_memory() -> None:
    """``POST /auth/native/token`` with 100 MiB, declared and chunked: the RSS seen from outside does
    not move (it grew by 306 MiB when the route read any body)."""
    with running() as bff:
        before = bff.rss_kib()
        for declared in (True, False):
            framing = f"Content-Length: {100 * MiB}" if declared else "Transfer-Encoding: chunked"
            sock = raw_http(
                bff.port,
                (
                    f"POST /auth/native/token HTTP/1.1\r\nHost: 127.0.0.1:{bff.port}\r\n"
                    f"Content-Type: application/json\r\n{framing}\r\n\r\n"
                ).encode(),
                receive_buffer=1 << 20,
            )
            try:
                piece = b" " * MiB if declared else b"%x\r\n%s\r\n" % (MiB, b" " * MiB)
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    for _ in range(100):
                        sock.sendall(piece)
                status, _, _ = read_response(sock, timeout=5)
            finally:
                sock.close()
            assert status == 413
        grown = (bff.rss_kib() - before) / 1024
    assert grown < 20, f"RSS grew by {grown:.0f} MiB"
