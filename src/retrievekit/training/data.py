"""Training examples: FlagEmbedding-style JSONL, triplets, and pairs built from a BEIR split's qrels.

One record type, :class:`TrainingExample`, whatever the source. Readers raise
:class:`~retrievekit.errors.DataFormatError` naming the file and line of a malformed row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrievekit.data.beir import RetrievalSplit, load_dataset
from retrievekit.data.readers import iter_jsonl, iter_lines
from retrievekit.errors import ConfigError, DataFormatError

__all__ = [
    "TrainingExample",
    "examples_from_split",
    "load_training_source",
    "read_training_file",
    "training_row",
]

# accepted names of each field: FlagEmbedding's first, then sentence-transformers' triplet columns
_QUERY_KEYS = ("query", "anchor", "question")
_POSITIVE_KEYS = ("pos", "positive", "positives")
_NEGATIVE_KEYS = ("neg", "negative", "negatives")


@dataclass(frozen=True)
class TrainingExample:
    """A query with at least one relevant text, optional hard negatives and optional teacher scores.

    ``positive_scores`` / ``negative_scores`` (when given) hold one teacher score per text, in the
    same order. ``prompt`` overrides the model's query prompt for this example (FlagEmbedding's
    ``prompt`` field).
    """

    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    positive_scores: tuple[float, ...] | None = None
    negative_scores: tuple[float, ...] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if not self.positives:
            raise ValueError("a training example needs at least one positive")
        for name, texts, scores in (
            ("positive", self.positives, self.positive_scores),
            ("negative", self.negatives, self.negative_scores),
        ):
            if scores is not None and len(scores) != len(texts):
                raise ValueError(f"{len(texts)} {name} texts but {len(scores)} {name} scores")

    @property
    def has_teacher_scores(self) -> bool:
        return self.positive_scores is not None and (not self.negatives or self.negative_scores is not None)


def _texts(path: Path, number: int, row: dict[str, Any], keys: Sequence[str], *, required: bool) -> tuple[str, ...]:
    key = next((k for k in keys if k in row), None)
    if key is None:
        if required:
            raise DataFormatError(path, f"missing field {keys[0]!r}", number)
        return ()
    value = row[key]
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DataFormatError(path, f"field {key!r} must be a string or a list of strings", number)
    if required and not values:
        raise DataFormatError(path, f"field {key!r} is empty; a training row needs at least one positive", number)
    return tuple(values)


def _scores(path: Path, number: int, row: dict[str, Any], key: str, count: int) -> tuple[float, ...] | None:
    if key not in row:
        return None
    value = row[key]
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise DataFormatError(path, f"field {key!r} must be a list of numbers", number)
    if not all(math.isfinite(v) for v in value):
        raise DataFormatError(path, f"field {key!r} holds a NaN or infinite score", number)
    if len(value) != count:
        raise DataFormatError(path, f"field {key!r} has {len(value)} scores for {count} texts", number)
    return tuple(float(v) for v in value)


def training_row(path: Path, number: int, row: dict[str, Any]) -> TrainingExample:
    """Parse one JSON row (FlagEmbedding's ``query/pos/neg/pos_scores/neg_scores/prompt`` or a
    sentence-transformers ``anchor/positive/negative`` triplet)."""
    query = _texts(path, number, row, _QUERY_KEYS, required=True)
    if len(query) != 1:
        raise DataFormatError(path, "field 'query' must be a single string", number)
    positives = _texts(path, number, row, _POSITIVE_KEYS, required=True)
    negatives = _texts(path, number, row, _NEGATIVE_KEYS, required=False)
    prompt = row.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise DataFormatError(path, "field 'prompt' must be a string", number)
    return TrainingExample(
        query=query[0],
        positives=positives,
        negatives=negatives,
        positive_scores=_scores(path, number, row, "pos_scores", len(positives)),
        negative_scores=_scores(path, number, row, "neg_scores", len(negatives)),
        prompt=prompt,
    )


def _iter_tsv(path: Path) -> Iterator[TrainingExample]:
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if len(fields) not in (2, 3) or not all(f.strip() for f in fields):
            raise DataFormatError(
                path, f"expected 'query<TAB>positive[<TAB>negative]', found {len(fields)} field(s)", number
            )
        yield TrainingExample(fields[0], (fields[1],), tuple(fields[2:]))


def read_training_file(path: str | Path) -> list[TrainingExample]:
    """Read training examples from JSONL (one object per line) or a TSV of pairs/triplets."""
    path = Path(path)
    if path.suffix.lower() in (".tsv", ".txt"):
        return list(_iter_tsv(path))
    return [training_row(path, number, row) for number, row in iter_jsonl(path)]


def examples_from_split(split: RetrievalSplit, *, min_grade: int = 1) -> list[TrainingExample]:
    """One example per judged query: its text and the full texts (``title text``) of its relevant
    documents. Queries with no relevant document are skipped (there is nothing to learn from)."""
    examples = []
    for query in split.queries:
        relevant = sorted(split.qrels.relevant(query.id, min_grade))
        positives = tuple(split.corpus[doc_id].full_text for doc_id in relevant if doc_id in split.corpus)
        if positives:
            examples.append(TrainingExample(query.text, positives))
    return examples


def load_training_source(source: str | Path) -> tuple[str, list[TrainingExample]]:
    """A named list of examples from a file (JSONL/TSV) or a BEIR dataset split written
    ``DATASET[:SPLIT]`` (split ``train`` by default), e.g. ``scifact:train``."""
    path = Path(source)
    if path.is_file():
        examples = read_training_file(path)
        name = path.stem
    else:
        text = str(source)
        dataset, _, split = text.rpartition(":") if ":" in text else (text, "", "train")
        if not dataset:
            raise ConfigError(f"training source {text!r}: expected a file or DATASET[:SPLIT]")
        beir = load_dataset(dataset)
        examples = examples_from_split(beir.load(split or "train"))
        name = f"{beir.name}-{split or 'train'}"
    if not examples:
        raise ConfigError(f"training source {source}: no usable example")
    return name, examples
