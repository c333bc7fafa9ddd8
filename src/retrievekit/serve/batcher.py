"""Dynamic batching: concurrent requests to one model are merged into batches under a token budget.

A :class:`ModelWorker` owns one model and one thread. Requests queue up (bounded: past
``max_queue`` texts, :class:`QueueFull`); the first one of a batch waits ``batch_wait`` seconds for
others, unless the budget fills first; the batch then takes whole requests, and parts of a request
too large for one batch, in arrival order, up to ``max_batch_tokens`` (the sum of the texts'
tokens), and the model's engine sorts them by length and pads each of its batches to its own
longest text. Requests are only ever merged with requests of the same ``key`` (queries with
queries, documents with documents). A request's future completes when its last part has run;
a request cancelled before its texts run (its client timed out) is dropped from the queue.

All workers of a server share one lock around the model call: the cores run one batch at a time,
with every thread on it, rather than several batches fighting for the same cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from retrievekit.errors import RetrievekitError

__all__ = ["BatchRecord", "ModelWorker", "QueueFull"]

logger = logging.getLogger(__name__)


class QueueFull(RetrievekitError):
    """The model's queue holds ``max_queue`` texts already; retry after ``retry_after`` seconds."""

    def __init__(self, model: str, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(f"model {model!r} has {queued} texts queued (limit {limit}); retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class BatchRecord:
    """What one model batch held and how long it took: what the metrics report."""

    model: str
    texts: int
    tokens: int
    seconds: float
    queued_after: int


@dataclass(eq=False)
class _Request:
    key: str
    items: Sequence[Any]
    tokens: Sequence[int]
    future: Future
    results: list[Any] = field(default_factory=list)
    taken: int = 0  # items handed to a batch
    done: int = 0  # items whose results are in

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)


class ModelWorker:
    """One model's queue and the thread that runs it.

    ``run(key, items)`` runs a merged batch and returns one result per item, in order."""

    def __init__(
        self,
        name: str,
        run: Callable[[str, list[Any]], Sequence[Any]],
        *,
        max_batch_tokens: int,
        batch_wait: float,
        max_queue: int,
        compute_lock: threading.Lock | None = None,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self.name, self._run = name, run
        self.max_batch_tokens, self.batch_wait, self.max_queue = max_batch_tokens, batch_wait, max_queue
        self._compute_lock = compute_lock or threading.Lock()
        self._on_batch = on_batch
        self._pending: deque[_Request] = deque()
        self._queued = 0  # items not yet handed to a batch
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"retrievekit-worker-{name}", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Texts waiting for a batch."""
        return self._queued

    def submit(self, key: str, items: Sequence[Any], tokens: Sequence[int]) -> Future:
        """Queue ``items`` (``tokens``: each one's token count); the future gives their results in order."""
        future: Future = Future()
        if not items:
            future.set_result([])
            return future
        with self._cond:
            if self._stopping:
                raise RetrievekitError(f"model {self.name!r} is shutting down")
            if self._queued + len(items) > self.max_queue:
                raise QueueFull(self.name, self._queued, self.max_queue, retry_after=1)
            request = _Request(key, items, tokens, future)
            self._pending.append(request)
            self._queued += len(items)
            self._cond.notify()
        future.add_done_callback(lambda f: self._forget(request) if f.cancelled() else None)
        return future

    def _forget(self, request: _Request) -> None:
        """A cancelled request (its client timed out) leaves the queue at once."""
        with self._cond:
            if request in self._pending:
                self._pending.remove(request)
                self._queued -= len(request.items) - request.taken

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---- the worker thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                deadline = time.monotonic() + self.batch_wait
                while not self._stopping and self._waiting_tokens(self._pending[0].key) < self.max_batch_tokens:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                parts = self._take()
            if parts:
                self._run_parts(parts)

    def _waiting_tokens(self, key: str) -> int:
        return sum(sum(r.tokens[r.taken :]) for r in self._pending if r.key == key)

    def _take(self) -> list[tuple[_Request, int, int]]:
        """Parts (request, start, end) for one batch, under the lock; drops cancelled requests."""
        parts: list[tuple[_Request, int, int]] = []
        key, budget = None, 0
        for request in list(self._pending):
            if key is None:
                key = request.key
            if request.key != key:
                continue
            start = end = request.taken
            while end < len(request.items) and (budget == 0 or budget + request.tokens[end] <= self.max_batch_tokens):
                budget += request.tokens[end]
                end += 1
            if end > start:
                parts.append((request, start, end))
                request.taken = end
                self._queued -= end - start
            if request.taken == len(request.items):
                self._pending.remove(request)
            if budget >= self.max_batch_tokens or end < len(request.items):
                break
        return parts

    def _run_parts(self, parts: list[tuple[_Request, int, int]]) -> None:
        items = [item for request, start, end in parts for item in request.items[start:end]]
        tokens = sum(sum(request.tokens[start:end]) for request, start, end in parts)
        started = time.perf_counter()
        try:
            with self._compute_lock:
                results = self._run(parts[0][0].key, items)
            if len(results) != len(items):
                raise RuntimeError(f"model {self.name!r} returned {len(results)} results for {len(items)} inputs")
        except Exception as exc:  # every request in the batch gets the error; the worker lives on
            logger.exception("model %r failed on a batch of %d inputs", self.name, len(items))
            for request, _, _ in parts:
                _settle(request.future, error=exc)
            return
        seconds = time.perf_counter() - started
        offset = 0
        for request, start, end in parts:
            request.results[start:end] = results[offset : offset + end - start]
            offset += end - start
            request.done += end - start
            if request.done == len(request.items):
                _settle(request.future, result=request.results)
        if self._on_batch is not None:
            self._on_batch(BatchRecord(self.name, len(items), tokens, seconds, self._queued))


def _settle(future: Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless its client gave up on it (cancelled) in the meantime."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
