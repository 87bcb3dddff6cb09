"""The one LRU of the document caches: both bounds (entries and weight) hold after every put, and a
use moves an entry to the young end."""

from __future__ import annotations

from bff.graphql.documents.lru import LRU


def _lru(maxsize: int | None = 3, max_weight: int = 100) -> LRU[str, str]:
    return LRU(maxsize=maxsize, max_weight=max_weight, weigh=lambda key, value: len(value))


def test_entries_bound_evicts_the_least_recently_used() -> None:
    cache = _lru()
    for key in "abc":
        cache.put(key, key)
    assert cache.get("a") == "a"  # a is now the youngest
    cache.put("d", "d")
    assert "b" not in cache and {"a", "c", "d"} == {k for k in "abcd" if k in cache}
    assert len(cache) == 3 and cache.weight == 3


def test_weight_bound_and_replacing_a_value() -> None:
    cache = _lru(maxsize=None, max_weight=10)
    cache.put("x", "12345")
    cache.put("y", "12345")
    assert cache.weight == 10
    cache.put("x", "1")  # replaced: its old weight is given back
    assert cache.weight == 6 and cache.get("x") == "1"
    cache.put("z", "123456789")  # 15 > 10: the oldest (y; x was used since) goes
    assert "y" not in cache and "x" in cache and cache.weight == 10
    cache.put("huge", "x" * 11)  # heavier than the whole budget: nothing is kept
    assert len(cache) == 0 and cache.weight == 0


def test_touch_and_membership() -> None:
    cache: LRU[str, bool] = LRU(maxsize=2, max_weight=100, weigh=lambda key, _: len(key))
    cache.put("a", True)
    cache.put("b", True)
    assert "a" in cache  # a look, not a use
    cache.put("c", True)
    assert "a" not in cache
    assert cache.touch("b") and not cache.touch("a")
    cache.put("d", True)
    assert "b" in cache and "c" not in cache
