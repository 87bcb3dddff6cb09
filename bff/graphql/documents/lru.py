"""The one LRU of the document caches (parse, validation, compiled plans, APQ).

Hand-written (on an `OrderedDict`) because each cache needs two bounds at once, entries and the
characters of the documents it holds (any client may fill them with valid documents it varies:
issue 24), which `functools.lru_cache` does not offer and `cachetools` offers only one of; and
because a hit sits on every request's path (one dict lookup and a move)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A map that forgets its least recently used entries beyond ``maxsize`` entries or
    ``max_weight`` in total `weigh` (the characters of the documents it holds)."""

    __slots__ = ("_items", "max_weight", "maxsize", "weigh", "weight")

    def __init__(self, *, max_weight: int, weigh: Callable[[K, V], int], maxsize: int | None = None) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self.maxsize = maxsize
        self.max_weight = max_weight
        self.weigh = weigh
        self.weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held, without counting as a use."""
        return key in self._items

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def touch(self, key: K) -> bool:
        """Whether ``key`` is held; if so it is now the most recently used (for None values)."""
        if key in self._items:
            self._items.move_to_end(key)
            return True
        return False

    def put(self, key: K, value: V) -> None:
        """Hold ``value`` under ``key`` (most recently used), then forget the least recently used
        entries until both bounds hold."""
        items = self._items
        if key in items:
            self.weight -= self.weigh(key, items.pop(key))
        items[key] = value
        self.weight += self.weigh(key, value)
        maxsize = self.maxsize
        while items and ((maxsize is not None and len(items) > maxsize) or self.weight > self.max_weight):
            evicted, old = items.popitem(last=False)
            self.weight -= self.weigh(evicted, old)
