"""`bff.protocols`: an answer's head and body leave in one write, and order holds whatever the
response does (a stream whose first event comes later, a close right after the head)."""

from __future__ import annotations

import asyncio

from bff.protocols import _HeadJoined, _LeanEvent, _Pipeline
from tests.support.servers import free_port


class RecordingTransport:
    """The calls a transport gets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, chunks: tuple[bytes, ...]) -> None:
        self.calls.append(("writelines", b"".join(chunks)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def is_closing(self) -> bool:
        return self.closing


async def test_head_and_body_are_one_write_and_a_lone_head_goes_at_the_next_iteration() -> None:
    loop = asyncio.get_running_loop()
    transport = RecordingTransport()
    joined = _HeadJoined(transport, loop)  # type: ignore[arg-type]
    joined.write(b"HEAD|")
    joined.write(b"body")
    await asyncio.sleep(0)
    assert transport.calls == [("writelines", b"HEAD|body")]

    streaming = RecordingTransport()
    joined = _HeadJoined(streaming, loop)  # type: ignore[arg-type]
    joined.write(b"HEAD|")
    assert streaming.calls == []
    await asyncio.sleep(0)  # a stream's first event comes later: the head is not kept waiting for it
    assert streaming.calls == [("write", b"HEAD|")]
    joined.write(b"event 1")
    joined.write(b"event 2")
    assert streaming.calls[1:] == [("write", b"event 1"), ("write", b"event 2")]

    closed = RecordingTransport()
    joined = _HeadJoined(closed, loop)  # type: ignore[arg-type]
    joined.write(b"HEAD|")
    joined.close()  # e.g. "connection: close" right after a head-only answer
    await asyncio.sleep(0)
    assert closed.calls == [("write", b"HEAD|"), ("close", b"")]


async def test_answers_over_a_real_uvicorn_connection_arrive_whole_and_in_order() -> None:
    """Keep-alive requests, a streamed answer and an empty one, through bff.protocols' HTTP protocol."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def plain(request: object) -> Response:
        return PlainTextResponse("hello")

    async def streamed(request: object) -> Response:
        async def events() -> object:
            for i in range(3):
                await asyncio.sleep(0.05)
                yield f"event {i}\n"

        return StreamingResponse(events(), media_type="text/plain")  # type: ignore[arg-type]

    async def empty(request: object) -> Response:
        return Response(status_code=204)

    app = Starlette(routes=[Route("/plain", plain), Route("/stream", streamed), Route("/empty", empty)])
    port = free_port()
    config = uvicorn.Config(app, port=port, http="bff.protocols:HTTPProtocol", log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn.Server has a flag, no event
        await asyncio.sleep(0.01)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in ("/plain", "/stream", "/empty"))
        writer.write(raw)  # pipelined: three answers, in order, on one connection
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"\r\n\r\n"):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, received
            received += chunk
        first, second, third = (b"HTTP/1.1 " + part for part in received.split(b"HTTP/1.1 ")[1:])
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\nhello")
        assert second.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in second
        assert b"event 0\n" in second and b"event 2\n" in second and second.endswith(b"0\r\n\r\n")
        assert third.startswith(b"HTTP/1.1 204")
        writer.close()
    finally:
        server.should_exit = True
        await task


async def test_the_lean_event_and_pipeline_behave_as_asyncios_and_uvicorns() -> None:
    event = _LeanEvent()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters) and len(event._waiters) == 3
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert event._waiters == [] and event.is_set()
    event.clear()
    cancelled = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert event._waiters == [] and _LeanEvent(True).is_set()
    pipeline = _Pipeline()
    for item in ("first", "second"):
        pipeline.appendleft(item)  # uvicorn queues with appendleft and takes with pop: first in, first out
    assert [pipeline.pop(), pipeline.pop()] == ["first", "second"] and not pipeline
