"""`ClientStreamRegistry`: the anonymous share of the process budget and the per-address limit
(issue 24); signed-in streams are counted per session only, and every slot comes back on close."""

from __future__ import annotations

import pytest

from bff.admission import ClientStreamRegistry
from bff.errors import StreamLimitExceeded
from bff.metrics import Metrics
from bff.sessions.crypto import SessionCrypto
from bff.sessions.memory import MemorySessionStore


def _registry() -> ClientStreamRegistry:
    store = MemorySessionStore(SessionCrypto(["secret"]), idle_seconds=60, absolute_seconds=3600)
    return ClientStreamRegistry(
        store, Metrics(), per_session=5, per_process=10, anonymous_share=0.5, anonymous_per_address=3
    )


async def test_anonymous_streams_hold_a_share_and_an_address_its_limit() -> None:
    registry = _registry()
    first = [registry.open(None, "192.0.2.1") for _ in range(3)]
    with pytest.raises(StreamLimitExceeded, match="this address"):
        registry.open(None, "192.0.2.1")
    second = [registry.open(None, "192.0.2.2") for _ in range(2)]
    with pytest.raises(StreamLimitExceeded, match="sign in"):  # 5 of 10: the anonymous share
        registry.open(None, "192.0.2.3")
    assert registry.anonymous == 5
    # signed-in streams still get the rest of the budget, whatever the address
    signed_in = [registry.open(f"session-{i}", "192.0.2.1") for i in range(5)]
    with pytest.raises(StreamLimitExceeded, match="maximum of 10"):
        registry.open("session-x", "192.0.2.9")
    for stream in [*first, *second, *signed_in]:
        registry.close(stream, "complete")
        registry.close(stream, "complete")  # twice: counted once
    assert registry.anonymous == 0 and len(registry) == 0
    assert [registry.open(None, "192.0.2.1") for _ in range(3)]
    text = registry.metrics.registry.get_sample_value
    assert text("bff_streams_refused_total", {"limit": "anonymous_per_address"}) == 1
    assert text("bff_streams_refused_total", {"limit": "anonymous"}) == 1
    assert text("bff_streams_open_anonymous") == 3
    await registry.shutdown(0.1)
