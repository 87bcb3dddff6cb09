"""Process-wide tuning of CPython's cyclic garbage collector, and timing of its pauses.

Why: with CPython's default thresholds (700, 10, 10) a generation-0 collection runs every few
hundred allocations, so the objects of requests still in flight are promoted, and full
collections walk them and everything the imported libraries built at start-up (40-140 ms
stop-the-world pauses). A request now leaves no reference cycles (`Context.release`, a test
checks it), so its objects are freed by reference counting; `settle_heap` freezes the start-up
heap and raises the generation-0 threshold, so collections are rare and short, and `GCPauses`
times every collection into ``bff_gc_pause_seconds`` so this stays observable.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

#: net container allocations between generation-0 collections, then collections of one
#: generation before the next. A collection walks the objects of the requests in flight, so the
#: threshold trades pause length against collector time. Measured with `scripts/bench.py` (one
#: worker, all workloads, 1-64 connections; BENCHMARKS.md): (700, 10, 10) made full collections
#: of 40-55 ms; (10_000, 10, 10) ~120-170 young collections per run, all under 20 ms, and zero or
#: one full collection (under 20 ms, or once 20-50 ms); (5_000, 10, 10) every pause under 20 ms
#: but ~15 % more CPU per viewer request at 64 connections. Freezing the heap a second time at
#: the end of start-up did not shorten the full collections.
THRESHOLDS = (10_000, 10, 10)


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
