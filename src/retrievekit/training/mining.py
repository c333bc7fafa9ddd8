"""Hard-negative mining in named steps: retrieve -> drop positives and likely false negatives ->
sample from a rank window -> write FlagEmbedding-style training rows.

The filter follows sentence-transformers' ``mine_hard_negatives`` margins: a candidate is kept only
if its score is at most ``positive_score - margin`` and at most ``positive_score * (1 - relative_margin)``,
where ``positive_score`` is the best score of the query's positives in the retrieved list.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retrievekit.artifacts import atomic_write_lines
from retrievekit.data.records import Corpus
from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.retrieval.retriever import Retriever
from retrievekit.training.batches import text_hash
from retrievekit.training.data import TrainingExample

__all__ = [
    "Candidate",
    "MiningReport",
    "drop_false_negatives",
    "mine_hard_negatives",
    "parse_rank_range",
    "retrieve_candidates",
    "sample_negatives",
    "write_training_rows",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A retrieved document: its 1-based rank in the retrieved list, text and score."""

    rank: int
    doc_id: str
    text: str
    score: float


@dataclass
class MiningReport:
    """Counts gathered while mining, printed by the CLI."""

    queries: int = 0
    positives_dropped: int = 0
    false_negatives_dropped: int = 0
    queries_without_retrieved_positive: int = 0
    queries_short_of_negatives: int = 0
    negatives_written: int = 0


def parse_rank_range(text: str) -> tuple[int, int]:
    """``"10-100"`` -> ``(10, 100)``: ranks 10 to 100 of the retrieved list, 1-based, inclusive.

    >>> parse_rank_range("10-100")
    (10, 100)
    """
    try:
        start, end = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise ConfigError(f"rank range must look like 10-100, got {text!r}") from None
    if not 1 <= start <= end:
        raise ConfigError(f"rank range {text!r}: need 1 <= start <= end")
    return start, end


def retrieve_candidates(
    retriever: Retriever, queries: Sequence[str], depth: int, corpus: Corpus
) -> list[list[Candidate]]:
    """Step 1: the top ``depth`` documents of each query, with their texts."""
    hits: list[Hits] = retriever.search(list(queries), depth)
    return [
        [Candidate(rank, doc_id, corpus[doc_id].full_text, float(score))
         for rank, (doc_id, score) in enumerate(zip(h.ids, h.scores.tolist(), strict=True), start=1)]
        for h in hits
    ]  # fmt: skip


def drop_false_negatives(
    candidates: list[Candidate],
    positives: Sequence[str],
    *,
    margin: float | None = None,
    relative_margin: float | None = None,
    report: MiningReport | None = None,
) -> list[Candidate]:
    """Step 2: remove the positives themselves and candidates scoring too close to the best
    retrieved positive (likely unjudged relevant documents). Without a retrieved positive only the
    positives are removed (there is no score to compare with), and the query is counted.

    >>> c = [Candidate(1, "p", "pos", 0.9), Candidate(2, "a", "A", 0.88), Candidate(3, "b", "B", 0.5)]
    >>> [x.doc_id for x in drop_false_negatives(c, ["pos"], margin=0.05)]
    ['b']
    """
    report = report if report is not None else MiningReport()
    positive_hashes = {text_hash(p) for p in positives}
    is_positive = [text_hash(c.text) in positive_hashes for c in candidates]
    report.positives_dropped += sum(is_positive)
    positive_scores = [c.score for c, pos in zip(candidates, is_positive, strict=True) if pos]
    kept = [c for c, pos in zip(candidates, is_positive, strict=True) if not pos]
    if not positive_scores:
        report.queries_without_retrieved_positive += 1
        return kept
    ceiling = max(positive_scores)
    limits = [float("inf")]
    if margin is not None:
        limits.append(ceiling - margin)
    if relative_margin is not None:
        limits.append(ceiling * (1 - relative_margin))
    limit = min(limits)
    filtered = [c for c in kept if c.score <= limit]
    report.false_negatives_dropped += len(kept) - len(filtered)
    return filtered


def sample_negatives(
    candidates: list[Candidate], rank_range: tuple[int, int], num: int, rng: np.random.Generator
) -> list[Candidate]:
    """Step 3: up to ``num`` candidates drawn without replacement from ranks ``rank_range``, kept in rank order."""
    start, end = rank_range
    window = [c for c in candidates if start <= c.rank <= end]
    if len(window) <= num:
        return window
    picks = sorted(rng.choice(len(window), size=num, replace=False).tolist())
    return [window[i] for i in picks]


def write_training_rows(path: str | Path, examples: Sequence[TrainingExample], *, with_scores: bool = False) -> Path:
    """Step 4: FlagEmbedding JSONL rows ``{"query", "pos", "neg"[, "pos_scores", "neg_scores"]}``, atomically."""

    def row(example: TrainingExample) -> str:
        data: dict[str, object] = {
            "query": example.query,
            "pos": list(example.positives),
            "neg": list(example.negatives),
        }
        if with_scores and example.positive_scores is not None and example.negative_scores is not None:
            data |= {"pos_scores": list(example.positive_scores), "neg_scores": list(example.negative_scores)}
        if example.prompt is not None:
            data["prompt"] = example.prompt
        return json.dumps(data, ensure_ascii=False)

    return atomic_write_lines(path, (row(e) for e in examples))


def mine_hard_negatives(
    examples: Sequence[TrainingExample],
    retriever: Retriever,
    corpus: Corpus,
    *,
    rank_range: tuple[int, int] = (10, 100),
    num: int = 8,
    margin: float | None = None,
    relative_margin: float | None = None,
    seed: int = 42,
    scorer: Callable[[str, Sequence[str]], list[float]] | None = None,
) -> tuple[list[TrainingExample], MiningReport]:
    """Run the steps for every example; return examples with ``negatives`` filled (and, when the
    candidates were scored, ``negative_scores``/``positive_scores`` from ``scorer`` if given).

    ``scorer(query, texts)`` (optional) gives teacher scores for the positives and chosen negatives,
    e.g. a cross-encoder, for distillation losses.
    """
    if num < 1:
        raise ConfigError(f"num must be at least 1, got {num}")
    report = MiningReport(queries=len(examples))
    retrieved = retrieve_candidates(retriever, [e.query for e in examples], rank_range[1], corpus)
    rng = np.random.default_rng(seed)
    mined = []
    for example, candidates in zip(examples, retrieved, strict=True):
        kept = drop_false_negatives(
            candidates, example.positives, margin=margin, relative_margin=relative_margin, report=report
        )
        chosen = sample_negatives(kept, rank_range, num, rng)
        if len(chosen) < num:
            report.queries_short_of_negatives += 1
        report.negatives_written += len(chosen)
        negatives = tuple(c.text for c in chosen)
        updated = replace(example, negatives=negatives, negative_scores=None)
        if scorer is not None:
            updated = replace(
                updated,
                positive_scores=tuple(scorer(example.query, example.positives)),
                negative_scores=tuple(scorer(example.query, negatives)),
            )
        mined.append(updated)
    logger.info("mined %d negatives for %d queries", report.negatives_written, report.queries)
    return mined, report
