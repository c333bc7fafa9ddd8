"""The encoding engine shared by every backend: check texts, tokenize, batch by length, run, reorder.

Texts are processed in chunks (``chunk_size`` texts at a time), so an iterator of any length is
encoded with bounded memory; within a chunk, batches are sorted by token length and padded only to
their own longest text. Results always come back in input order.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from retrievekit.models.batching import plan_batches

__all__ = ["BatchRunner", "EncodeStats", "TokenizedChunk", "check_texts", "encode_chunks", "tokenize_chunk"]

logger = logging.getLogger(__name__)

# (input_ids, attention_mask) int64 arrays -> float32 (batch, dim) embeddings. A runner may also
# offer ``run_many(batches, on_rows)`` to schedule all the batches of a chunk at once (the onnx one does).
BatchRunner = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class EncodeStats:
    """Counts gathered while encoding, reported rather than silently absorbed."""

    texts: int = 0
    tokens: int = 0
    empty: int = 0
    truncated: int = 0

    def report(self, max_length: int) -> None:
        if self.empty:
            logger.warning(
                "%d of %d texts were empty strings; they were encoded as empty input", self.empty, self.texts
            )
        if self.truncated:
            logger.warning(
                "%d of %d texts were longer than max_length=%d tokens and were truncated",
                self.truncated,
                self.texts,
                max_length,
            )


@dataclass(frozen=True)
class TokenizedChunk:
    input_ids: list[list[int]]
    truncated: int

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def check_texts(texts: Sequence[object], offset: int = 0) -> None:
    """Raise ``TypeError`` naming the position of the first item that is not a string."""
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text at position {offset + position} is {type(text).__name__}, expected str")


def tokenize_chunk(tokenizer, texts: list[str], max_length: int) -> TokenizedChunk:
    """Tokenize without padding; count the texts that had to be truncated to ``max_length``."""
    engine = _truncating_engine(tokenizer, max_length)
    if engine is not None:  # fast tokenizers: one pass, each encoding says whether it was cut
        encode = getattr(engine, "encode_batch_fast", engine.encode_batch)
        encodings = encode(texts)
        return TokenizedChunk([e.ids for e in encodings], sum(1 for e in encodings if e.overflowing))
    # one extra token tells which texts are too long; only those are tokenized again, cut to max_length
    ids = tokenizer(
        texts,
        truncation=True,
        max_length=max_length + 1,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]
    too_long = [i for i, row in enumerate(ids) if len(row) > max_length]
    if too_long:
        cut = tokenizer(
            [texts[i] for i in too_long],
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        for i, row in zip(too_long, cut, strict=True):
            ids[i] = row
    return TokenizedChunk(ids, len(too_long))


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def _truncating_engine(tokenizer, max_length: int):
    """A private copy of a fast tokenizer's engine that cuts at ``max_length`` and never pads, or
    None for tokenizers without one. A copy, because the shared engine keeps whatever padding and
    truncation its last caller set (and callers in other threads may set them at any time)."""
    source = getattr(tokenizer, "backend_tokenizer", None)
    if source is None or not hasattr(source, "to_str"):
        return None
    with _ENGINES_LOCK:
        try:
            engines = _ENGINES.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable: no cache, tokenize through the tokenizer
            return None
        side = getattr(tokenizer, "truncation_side", "right")
        key = (max_length, side, source.get_vocab_size(with_added_tokens=True))  # added tokens: a new copy
        if key not in engines:
            engine = type(source).from_str(source.to_str())
            engine.no_padding()
            engine.enable_truncation(max_length, direction=side)
            engines[key] = engine
        return engines[key]


def _pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


def _run_batches(
    runners: Sequence[BatchRunner], jobs: list[tuple[np.ndarray, np.ndarray]], progress: tqdm | None
) -> list[np.ndarray]:
    lock = threading.Lock()

    def advance(rows: int) -> None:  # called from worker threads too
        if progress is not None:
            with lock:
                progress.update(rows)

    run_many = getattr(runners[0], "run_many", None)
    if len(runners) == 1 and run_many is not None:  # the runner schedules the whole chunk itself
        return run_many(jobs, advance)
    if len(runners) == 1:
        outputs = []
        for input_ids, mask in jobs:
            outputs.append(runners[0](input_ids, mask))
            advance(len(input_ids))
        return outputs
    # several devices: one thread per device pulls batches from a shared queue
    results: list[np.ndarray | None] = [None] * len(jobs)
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(jobs)):
        pending.put(index)
    errors: list[BaseException] = []

    def worker(runner: BatchRunner) -> None:
        while not errors:
            try:
                index = pending.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = runner(*jobs[index])
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                return
            advance(len(jobs[index][0]))

    threads = [threading.Thread(target=worker, args=(runner,), daemon=True) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def encode_chunks(
    texts: Iterable[str],
    *,
    tokenizer,
    runners: Sequence[BatchRunner],
    max_length: int,
    batch_size: int,
    max_tokens: int | None = None,
    chunk_size: int = 8192,
    prompt: str = "",
    lowercase: bool = False,
    show_progress: bool = False,
    total: int | None = None,
    stats: EncodeStats | None = None,
    description: str = "Encoding",
) -> Iterator[np.ndarray]:
    """Yield float32 embeddings chunk by chunk, each chunk in input order."""
    stats = stats if stats is not None else EncodeStats()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    iterator = iter(texts)
    progress = tqdm(total=total, desc=description, unit="text", disable=not show_progress, leave=False)
    try:
        offset = 0
        while chunk := list(itertools.islice(iterator, chunk_size)):
            check_texts(chunk, offset)
            stats.empty += sum(1 for t in chunk if not t)
            prepared = [prompt + t for t in chunk] if prompt else chunk
            if lowercase:
                prepared = [t.lower() for t in prepared]
            tokenized = tokenize_chunk(tokenizer, prepared, max_length)
            lengths = tokenized.lengths
            stats.texts += len(chunk)
            stats.truncated += tokenized.truncated
            stats.tokens += sum(lengths)
            batches = plan_batches(lengths, batch_size, max_tokens)
            jobs = [_pad([tokenized.input_ids[i] for i in batch], pad_id) for batch in batches]
            outputs = _run_batches(runners, jobs, progress)
            dim = outputs[0].shape[1]
            embeddings = np.empty((len(chunk), dim), dtype=np.float32)
            for batch, output in zip(batches, outputs, strict=True):
                embeddings[batch] = output
            offset += len(chunk)
            yield embeddings
    finally:
        progress.close()
