"""Process-wide tuning of CPython's cyclic garbage collector, and timing of its pauses.

Why: a request of the viewer query leaves a few hundred objects in reference cycles (tasks and
futures, DataLoader batches, upstream request/response pairs) and keeps a few thousand alive while
it waits on upstreams. With CPython's default thresholds (700, 10, 10) a generation-0 collection
runs every few hundred allocations, so in-flight objects are promoted and full collections walk
everything the imported libraries built at start-up: measured at 17 % of a worker's CPU and
40-140 ms stop-the-world pauses. `settle_heap` freezes the start-up heap (full collections no
longer walk it) and raises the generation-0 threshold, so collections are rarer and find mostly
garbage; `GCPauses` times every collection into ``bff_gc_pause_seconds`` so this is observable.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

#: generation-0 allocations between collections, then how many collections of one generation
#: before the next is collected. Measured on the viewer query (``scripts/bench_cpu.py``): the
#: default (700, 10, 10) costs ~15 % more CPU per request than this. The price is memory: up to
#: ~50,000 young container objects (a few MB) wait for a collection.
THRESHOLDS = (50_000, 50, 10)


def settle_heap(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Collect, then move everything built at start-up (modules, schema, app) out of the
    collector's sight (`gc.freeze`), and set the thresholds. Called once per worker, after the
    app is built and before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


class GCPauses:
    """Times every collection of this process into a histogram labelled by generation, through
    `gc.callbacks` (the only hook CPython offers; it runs inside the pause, so it does nothing
    but read a clock and observe)."""

    def __init__(self, histogram: Histogram) -> None:
        self._by_generation = [histogram.labels(str(generation)) for generation in range(3)]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)
            self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
