"""The encoding engine shared by every backend and every family: check texts, tokenize (single
texts or query-document pairs), batch by length, run, and assemble the head's output in input order.

Texts are processed in chunks (``chunk_size`` texts at a time), so an iterator of any length is
encoded with bounded memory; within a chunk, batches are sorted by token length and padded only to
their own longest text. A runner (torch or ONNX Runtime, :data:`BatchRunner`) maps a padded
:class:`TokenBatch` to the head's raw output; :func:`assemble` turns the batches' outputs into the
family's record: a float32 matrix (``dense``), :class:`~retrievekit.outputs.MultiVectors`
(``multivector``), :class:`~retrievekit.outputs.SparseVectors` (``sparse``) or scores (``score``).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from retrievekit.errors import ConfigError
from retrievekit.models.batching import plan_batches
from retrievekit.outputs import OUTPUT_KINDS, MultiVectors, OutputKind, SparseVectors

__all__ = [
    "TRUNCATION_STRATEGIES",
    "BatchOutput",
    "BatchRunner",
    "ChunkOutput",
    "EncodeStats",
    "OutputSpec",
    "TokenBatch",
    "TokenLayout",
    "TokenizedChunk",
    "assemble",
    "check_pairs",
    "check_texts",
    "encode_chunks",
    "encode_items",
    "encode_pair_chunks",
    "pad_batch",
    "prepare_texts",
    "token_counts",
    "tokenize_chunk",
    "tokenize_pairs",
    "tokenize_with_layout",
]

logger = logging.getLogger(__name__)

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch: ``(n, width)`` int64 ids and mask (1 = a token the model attends to), the
    segment ids of text pairs (``None`` for single texts), and which positions' per-token outputs are
    kept (``output_mask``; ``None``: the attended ones). The two masks differ for ColBERT: query
    expansion tokens are kept but not attended to, punctuation in documents attended to but dropped."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None = None
    output_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def kept(self) -> np.ndarray:
        """The positions whose per-token outputs are kept, as a boolean ``(n, width)`` array."""
        return (self.attention_mask if self.output_mask is None else self.output_mask).astype(bool)

    def used_width(self, rows: np.ndarray | slice = slice(None)) -> int:
        """The columns ``rows`` need: up to the last position attended to or kept (rows are right-padded)."""
        used = self.attention_mask[rows].astype(bool)
        if self.output_mask is not None:
            used |= self.output_mask[rows].astype(bool)
        return int(used.sum(axis=1).max(initial=1))

    def rows(self, rows: np.ndarray, width: int | None = None) -> TokenBatch:
        """The rows ``rows``, cut to the first ``width`` columns when given."""
        cut = slice(None, width)
        types = None if self.token_type_ids is None else self.token_type_ids[rows, cut]
        kept = None if self.output_mask is None else self.output_mask[rows, cut]
        return TokenBatch(self.input_ids[rows, cut], self.attention_mask[rows, cut], types, kept)


# A padded batch -> the head's raw output for it: (n, dim) dense, (n, width, dim) per-token,
# (n, vocab) sparse weights or (n,) / (n, labels) scores; a dict of those, one per part, for a head
# with several parts. A runner may also offer ``run_many(batches, on_rows)`` to schedule all the
# batches of a chunk at once (the onnx one does).
BatchOutput = np.ndarray | dict[str, np.ndarray]
BatchRunner = Callable[[TokenBatch], BatchOutput]
ChunkOutput = np.ndarray | MultiVectors | SparseVectors
# what the engine is asked to assemble: one output kind, or part name -> kind (several from one pass)
OutputSpec = OutputKind | Mapping[str, OutputKind]


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
    """Unpadded token ids of a chunk, how many texts (or pairs) were truncated, segment ids for pairs,
    and how many leading tokens of each row the model attends to (``None``: all of them)."""

    input_ids: list[list[int]]
    truncated: int
    token_type_ids: list[list[int]] | None = None
    attended: list[int] | None = None

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


@dataclass(frozen=True)
class TokenLayout:
    """How a family reshapes tokenized rows before the model sees them, and which outputs it drops.

    ColBERT's: a marker token (``[Q]``/``[D]``) after the first token, queries padded to
    ``expand_to`` tokens with ``expand_id`` (``[MASK]``), whose output vectors are kept while the model
    does not attend to them (unless ``attend_expansion``); ``skip_ids`` (punctuation) are attended to,
    but their per-token outputs are dropped. ``skip_first``: the first position's per-token output is
    dropped too (BGE-M3's multi-vectors leave out ``[CLS]``).

    >>> layout = TokenLayout(marker_id=1, expand_to=6, expand_id=9)
    >>> chunk = layout.apply(TokenizedChunk([[101, 7, 102]], truncated=0))
    >>> chunk.input_ids, chunk.attended
    ([[101, 1, 7, 102, 9, 9]], [4])
    """

    marker_id: int | None = None
    expand_to: int | None = None
    expand_id: int = 0
    attend_expansion: bool = False
    skip_ids: tuple[int, ...] = ()
    skip_first: bool = False

    @property
    def reserved(self) -> int:
        """Tokens the layout adds to each row, to take off the tokenizer's length budget."""
        return 0 if self.marker_id is None else 1

    def apply(self, chunk: TokenizedChunk) -> TokenizedChunk:
        rows = chunk.input_ids
        if self.marker_id is not None:
            rows = [[*row[:1], self.marker_id, *row[1:]] for row in rows]
        attended = None
        if self.expand_to is not None:
            attended = [self.expand_to if self.attend_expansion else len(row) for row in rows]
            rows = [row + [self.expand_id] * (self.expand_to - len(row)) for row in rows]
        return TokenizedChunk(rows, chunk.truncated, chunk.token_type_ids, attended)


def check_texts(texts: Sequence[object], offset: int = 0) -> None:
    """Raise ``TypeError`` naming the position of the first item that is not a string."""
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text at position {offset + position} is {type(text).__name__}, expected str")


def check_pairs(pairs: Sequence[object], offset: int = 0) -> None:
    """Raise ``TypeError`` naming the position of the first item that is not a pair of strings."""
    for position, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise TypeError(f"pair at position {offset + position} is not a (str, str) pair: {pair!r:.80}")


def tokenize_pairs(
    tokenizer: Any,
    firsts: list[str],
    seconds: list[str],
    max_length: int,
    truncation: str = "longest_first",
) -> TokenizedChunk:
    """Tokenize text pairs (query first) as ``[CLS] a [SEP] b [SEP]`` with segment ids, cut to
    ``max_length`` by ``truncation`` (``longest_first``: tokens come off the longer text first);
    count the pairs that had to be cut.

    The count comes from one untruncated pass over the lengths, so it is exact for every tokenizer.
    """
    if truncation not in TRUNCATION_STRATEGIES:
        raise ConfigError(f"truncation must be one of {', '.join(TRUNCATION_STRATEGIES)}, got {truncation!r}")
    if len(firsts) != len(seconds):
        raise ConfigError(f"{len(firsts)} first texts for {len(seconds)} second texts")
    full = tokenizer(firsts, seconds, truncation=False, padding=False, return_attention_mask=False, verbose=False)
    too_long = sum(1 for row in full["input_ids"] if len(row) > max_length)
    encoded = tokenizer(
        firsts,
        seconds,
        truncation=truncation,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    return TokenizedChunk(list(encoded["input_ids"]), too_long, list(encoded["token_type_ids"]))


def tokenize_chunk(tokenizer: Any, texts: list[str], max_length: int) -> TokenizedChunk:
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


def prepare_texts(texts: list[str], prompt: str = "", lowercase: bool = False) -> list[str]:
    """The texts as the tokenizer sees them: the prompt in front, lowercased when the model says so."""
    prepared = [prompt + t for t in texts] if prompt else texts
    return [t.lower() for t in prepared] if lowercase else prepared


def token_counts(tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[int], list[bool]]:
    """Tokens each text takes (special tokens included, at most ``max_length``) and whether it had to
    be cut: what a server reports as usage and batches by, without padding or running anything."""
    engine = _truncating_engine(tokenizer, max_length)
    if engine is not None:
        encode = getattr(engine, "encode_batch_fast", engine.encode_batch)
        encodings = encode(texts)
        return [len(e.ids) for e in encodings], [bool(e.overflowing) for e in encodings]
    ids = tokenizer(texts, truncation=True, max_length=max_length + 1, padding=False,
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]  # fmt: skip
    return [min(len(row), max_length) for row in ids], [len(row) > max_length for row in ids]


def tokenize_with_layout(
    tokenizer: Any, texts: list[str], max_length: int, layout: TokenLayout | None = None
) -> TokenizedChunk:
    """Tokenize ``texts`` into rows of at most ``max_length`` tokens shaped by ``layout`` (its
    markers taken off the budget): the one tokenisation of encoding and of training collators."""
    layout = layout or TokenLayout()
    return layout.apply(tokenize_chunk(tokenizer, texts, max_length - layout.reserved))


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def _truncating_engine(tokenizer: Any, max_length: int) -> Any:
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


def pad_batch(
    rows: Sequence[Sequence[int]],
    pad_id: int,
    token_types: Sequence[Sequence[int]] | None = None,
    *,
    attended: Sequence[int] | None = None,
    skip_ids: Sequence[int] = (),
    skip_first: bool = False,
) -> TokenBatch:
    """Right-pad token rows to the longest one (the one padding used by encoding and training).

    ``attended``: how many leading tokens of each row the model attends to (the rest of the row is
    kept in the output); ``skip_ids``: tokens whose per-token outputs are dropped; ``skip_first``:
    the first position's per-token output is dropped.

    >>> batch = pad_batch([[5, 6, 7], [8]], pad_id=0)
    >>> batch.input_ids.tolist(), batch.attention_mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    >>> pad_batch([[5, 6, 7], [8]], pad_id=0, attended=[2, 1], skip_ids=[6]).output_mask.tolist()
    [[1, 0, 1], [1, 0, 0]]
    >>> pad_batch([[5, 6, 7], [8, 9]], pad_id=0, skip_first=True).output_mask.tolist()
    [[0, 1, 1], [0, 1, 0]]
    """
    width = max((len(r) for r in rows), default=0)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = None if token_types is None else np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        mask[i, : len(row) if attended is None else attended[i]] = 1
        if types is not None and token_types is not None:
            types[i, : len(row)] = token_types[i]
    output_mask = None
    if attended is not None or len(skip_ids) or skip_first:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        kept = np.arange(width)[None, :] < lengths[:, None]
        if len(skip_ids):
            kept &= ~np.isin(input_ids, np.asarray(skip_ids, dtype=np.int64))
        if skip_first:
            kept[:, :1] = False
        output_mask = kept.astype(np.int64)
    return TokenBatch(input_ids, mask, types, output_mask)


def assemble(
    kind: OutputSpec,
    batches: Sequence[np.ndarray],
    jobs: Sequence[TokenBatch],
    outputs: Sequence[BatchOutput],
    count: int,
) -> Any:
    """Put the outputs of length-sorted batches back in input order as ``kind``'s record (for a
    mapping of part names to kinds, a dict of each part's record).

    ``batches[i]`` holds the input positions of ``jobs[i]``, whose runner output is ``outputs[i]``.

    >>> jobs = [pad_batch([[1, 2]], 0), pad_batch([[3]], 0)]
    >>> out = [np.array([[[1.0], [2.0]]]), np.array([[[3.0]]])]
    >>> mv = assemble("multivector", [np.array([1]), np.array([0])], jobs, out, 2)
    >>> [row.ravel().tolist() for row in mv]
    [[3.0], [1.0, 2.0]]
    """
    if isinstance(kind, Mapping):
        parts = [dict(output) for output in outputs if isinstance(output, dict)]
        if len(parts) != len(outputs):
            raise ConfigError("a head with several parts gave a single output")
        return {name: assemble(part, batches, jobs, [o[name] for o in parts], count) for name, part in kind.items()}
    arrays = [output for output in outputs if isinstance(output, np.ndarray)]
    if len(arrays) != len(outputs):
        raise ConfigError(f"the head gave several parts where one {kind} output was expected")
    return _assemble_one(kind, batches, jobs, arrays, count)


def _assemble_one(
    kind: OutputKind, batches: Sequence[np.ndarray], jobs: Sequence[TokenBatch], outputs: Sequence[np.ndarray],
    count: int,
) -> ChunkOutput:  # fmt: skip
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"unknown output kind {kind!r}; choose one of {', '.join(OUTPUT_KINDS)}")
    if kind == "multivector":
        rows: list[np.ndarray] = [np.empty((0, 0), np.float32)] * count
        for batch, job, output in zip(batches, jobs, outputs, strict=True):
            for position, row, kept in zip(batch, output, job.kept, strict=True):
                rows[int(position)] = row[kept]
        return MultiVectors.from_list(rows, outputs[0].shape[-1] if outputs else 0)
    if kind == "sparse":  # each batch made sparse on its own: a chunk never holds (texts, vocabulary) floats
        parts = [SparseVectors.from_dense(output) for output in outputs]
        order = np.argsort(np.concatenate(batches), kind="stable")
        return SparseVectors.concatenate(parts).take(order)
    first = outputs[0]
    result = np.empty((count, *first.shape[1:]), dtype=np.float32)
    for batch, output in zip(batches, outputs, strict=True):
        result[batch] = output
    if kind == "score" and result.ndim == 2 and result.shape[1] == 1:
        return result[:, 0]
    return result


def _run_batches(runners: Sequence[BatchRunner], jobs: list[TokenBatch], progress: tqdm | None) -> list[BatchOutput]:
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
        for job in jobs:
            outputs.append(runners[0](job))
            advance(len(job))
        return outputs
    # several devices: one thread per device pulls batches from a shared queue
    results: list[BatchOutput | None] = [None] * len(jobs)
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
                results[index] = runner(jobs[index])
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                return
            advance(len(jobs[index]))

    threads = [threading.Thread(target=worker, args=(runner,), daemon=True) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def _run_tokenized(
    tokenized: TokenizedChunk,
    runners: Sequence[BatchRunner],
    *,
    pad_id: int,
    batch_size: int,
    max_tokens: int | None,
    output: OutputSpec,
    progress: tqdm | None,
    layout: TokenLayout,
) -> Any:
    lengths = tokenized.lengths
    batches = plan_batches(lengths, batch_size, max_tokens)
    types, attended = tokenized.token_type_ids, tokenized.attended
    jobs = [
        pad_batch(
            [tokenized.input_ids[i] for i in batch],
            pad_id,
            None if types is None else [types[i] for i in batch],
            attended=None if attended is None else [attended[i] for i in batch],
            skip_ids=layout.skip_ids,
            skip_first=layout.skip_first,
        )
        for batch in batches
    ]
    outputs = _run_batches(runners, jobs, progress)
    return assemble(output, batches, jobs, outputs, len(lengths))


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def encode_items(
    items: Iterable[Any],
    *,
    check: Callable[[Sequence[Any], int], None],
    tokenize: Callable[[list[Any]], TokenizedChunk],
    tokenizer: Any,
    runners: Sequence[BatchRunner],
    batch_size: int,
    max_tokens: int | None,
    chunk_size: int,
    show_progress: bool,
    total: int | None,
    stats: EncodeStats,
    description: str,
    unit: str,
    output: OutputSpec,
    layout: TokenLayout | None = None,
) -> Iterator[Any]:
    """The chunk loop every kind of input shares: check, tokenize, count, run, assemble. A family
    with its own input layout (an LLM reranker's prompt around each pair) passes its ``tokenize``."""
    iterator = iter(items)
    # with a total the bar shows rate and ETA and stays, complete, when done
    progress = tqdm(total=total, desc=description, unit=unit, disable=not show_progress, leave=total is not None)
    try:
        offset = 0
        while chunk := list(itertools.islice(iterator, chunk_size)):
            check(chunk, offset)
            tokenized = tokenize(chunk)
            stats.texts += len(chunk)
            stats.truncated += tokenized.truncated
            stats.tokens += sum(tokenized.lengths)
            yield _run_tokenized(
                tokenized, runners, pad_id=_pad_id(tokenizer), batch_size=batch_size, max_tokens=max_tokens,
                output=output, progress=progress, layout=layout or TokenLayout(),
            )  # fmt: skip
            offset += len(chunk)
    finally:
        progress.close()


def encode_chunks(
    texts: Iterable[str],
    *,
    tokenizer: Any,
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
    output: OutputSpec = "dense",
    layout: TokenLayout | None = None,
) -> Iterator[Any]:
    """Yield the head's output chunk by chunk (``output`` says which record; a mapping of part names
    to kinds gives a dict of records per chunk), each chunk in input order.

    ``layout`` reshapes the tokenized rows (markers, query expansion) within ``max_length`` tokens
    and names the token ids whose per-token outputs are dropped."""
    stats = stats if stats is not None else EncodeStats()
    layout = layout or TokenLayout()

    def tokenize(chunk: list[str]) -> TokenizedChunk:
        stats.empty += sum(1 for t in chunk if not t)
        return tokenize_with_layout(tokenizer, prepare_texts(chunk, prompt, lowercase), max_length, layout)

    return encode_items(
        texts, check=check_texts, tokenize=tokenize, tokenizer=tokenizer, runners=runners, batch_size=batch_size,
        max_tokens=max_tokens, chunk_size=chunk_size, show_progress=show_progress, total=total, stats=stats,
        description=description, unit="text", output=output, layout=layout,
    )  # fmt: skip


def encode_pair_chunks(
    pairs: Iterable[tuple[str, str]],
    *,
    tokenizer: Any,
    runners: Sequence[BatchRunner],
    max_length: int,
    batch_size: int,
    truncation: str = "longest_first",
    max_tokens: int | None = None,
    chunk_size: int = 8192,
    show_progress: bool = False,
    total: int | None = None,
    stats: EncodeStats | None = None,
    description: str = "Scoring pairs",
    output: OutputSpec = "score",
) -> Iterator[Any]:
    """Like :func:`encode_chunks` for ``(query, document)`` pairs, tokenized together with segment ids."""

    def tokenize(chunk: list[tuple[str, str]]) -> TokenizedChunk:
        return tokenize_pairs(tokenizer, [a for a, _ in chunk], [b for _, b in chunk], max_length, truncation)

    return encode_items(
        pairs, check=check_pairs, tokenize=tokenize, tokenizer=tokenizer, runners=runners, batch_size=batch_size,
        max_tokens=max_tokens, chunk_size=chunk_size, show_progress=show_progress, total=total,
        stats=stats if stats is not None else EncodeStats(), description=description, unit="pair", output=output,
    )  # fmt: skip
