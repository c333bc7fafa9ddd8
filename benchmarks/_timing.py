"""The one timing loop of the side-by-side benchmarks: alternating order, best of N."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of_alternating(
    runs: dict[str, Callable[[], T]], repeats: int, *, warm_up: bool = True
) -> tuple[dict[str, float], dict[str, T]]:
    """Time every run ``repeats`` times, in the given order on even rounds and reversed on odd ones
    (neither side always runs first, on warm or cold caches); return each run's best seconds and
    its last output. ``warm_up`` runs each once, untimed, first (compilation, lazy loading)."""
    if warm_up:
        for run in runs.values():
            run()
    best: dict[str, float] = {}
    outputs: dict[str, T] = {}
    for repeat in range(repeats):
        for name, run in list(runs.items())[:: 1 if repeat % 2 == 0 else -1]:
            started = time.perf_counter()
            outputs[name] = run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    return best, outputs
