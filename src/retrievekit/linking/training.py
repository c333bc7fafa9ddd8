"""Training data for entity linkers, and the dev score the trainer stops on.

:func:`linking_examples` turns mentions into the trainer's :class:`~retrievekit.training.TrainingExample`
rows: the query is the mention's text (in its context with markers, or a preprocessed part alone),
the positives are *every* entry of its gold concepts (all the names of a concept: the trainer draws
one per step and never counts another name of the same concept in the batch as a negative, which
is the synonym marginalisation BioSyn does with its loss; ``positive_depth`` narrows them to the
ones the model already ranks best, as BioSyn's loss counts only its top candidates), and the hard
negatives are the best entries of *other* concepts found by the current model in the
:class:`EntityIndex` (the entries whose ids meet the gold are skipped: BioSyn's rule for a right
candidate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrievekit.errors import ConfigError
from retrievekit.linking.linker import EntityIndex, EntityLinker
from retrievekit.linking.metrics import gold_ids
from retrievekit.linking.records import Mention, Name
from retrievekit.linking.text import LinkingFormat, saved_format

__all__ = [
    "MINING_DEPTH",
    "LinkingDevScore",
    "LinkingMiningReport",
    "linking_examples",
    "synonym_queries",
    "training_queries",
]

MINING_DEPTH = 64  # the entries :func:`linking_examples` ranks per query, hard negatives and positives drawn from them


@dataclass(frozen=True)
class LinkingMiningReport:
    """What :func:`linking_examples` made: queries read, examples written (a query whose gold
    concepts have no entry but itself is dropped), hard negatives written."""

    queries: int
    examples: int
    without_positive: int
    negatives_written: int


def training_queries(
    mentions: Sequence[Mention],
    fmt: LinkingFormat,
    tokenizer: Any,
    *,
    parts: bool,
    documents: Mapping[str, str] | None = None,
) -> list[tuple[str, frozenset[str]]]:
    """(query text, gold ids) pairs. ``parts``: each preprocessed part alone (BioSyn's queries; a
    split composite's parts are paired with its gold ids in order, and skipped when the counts
    differ); otherwise each mention as ``fmt`` writes it (``documents``: their whole texts, by id,
    where ``fmt.abbreviations`` looks for definitions)."""
    if not parts:
        texts = fmt.mention_texts(mentions, tokenizer, documents)
        return [(text, gold_ids(m.labels)) for text, m in zip(texts, mentions, strict=True)]
    queries = []
    for mention in mentions:
        gold = (mention.gold or "|".join(mention.labels)).replace("+", "|").split("|")
        if len(mention.parts) == 1:
            queries.append((mention.parts[0], gold_ids(gold)))
        elif len(mention.parts) == len(gold):
            queries += [(part, frozenset({g.strip()})) for part, g in zip(mention.parts, gold, strict=True)]
    return queries


def synonym_queries(names: Sequence[Name], *, per_concept: int = 4, seed: int = 0) -> list[tuple[str, frozenset[str]]]:
    """SapBERT's self-alignment queries: names of the knowledge base as queries for the other names
    of their concepts, before any mention is seen. At most ``per_concept`` names of each concept
    with two or more distinct names (a seeded sample), each paired with the ids it names; feed them
    to :func:`linking_examples`, which makes the concept's other names the positives and mines
    names of other concepts as hard negatives.

    >>> names = [Name("heart attack", ("D1",)), Name("myocardial infarction", ("D1",)), Name("flu", ("D2",))]
    >>> synonym_queries(names)
    [('heart attack', frozenset({'D1'})), ('myocardial infarction', frozenset({'D1'}))]
    """
    import random

    by_concept: dict[str, dict[str, frozenset[str]]] = {}
    for entry in names:
        for concept in entry.ids:
            by_concept.setdefault(concept, {})[entry.name] = frozenset(entry.ids)
    sampler, queries, seen = random.Random(seed), [], set()
    for concept in sorted(by_concept):
        own = sorted(by_concept[concept])
        if len(own) < 2:
            continue
        for name in sampler.sample(own, per_concept) if len(own) > per_concept else own:
            if name not in seen:  # a name several concepts share is one query, with all their ids
                seen.add(name)
                queries.append((name, by_concept[concept][name]))
    return queries


def linking_examples(
    queries: Sequence[tuple[str, frozenset[str]]],
    index: EntityIndex,
    *,
    num_negatives: int = 15,
    depth: int = MINING_DEPTH,
    positive_depth: int | None = None,
    batch_size: int = 128,
    show_progress: bool = True,
) -> tuple[list[Any], LinkingMiningReport]:
    """Training examples for ``queries`` (see the module doc), hard negatives mined from ``index``
    with its own model (BM25 when it has none).

    ``positive_depth=k`` keeps as positives only the gold entries the model already ranks among
    its best ``k`` (best first), as BioSyn marginalises over the synonyms among its top-k
    candidates rather than over every name of the concept; a query with none there keeps them all.
    """
    from retrievekit.training.data import TrainingExample

    if positive_depth is not None and not 1 <= positive_depth <= depth:
        raise ConfigError(f"positive_depth must be between 1 and depth ({depth}), got {positive_depth}")

    by_concept = index.names_by_concept
    answers = EntityLinker(index, LinkingFormat(context=False)).link_texts(
        [q for q, _ in queries], depth, group="names", batch_size=batch_size, show_progress=show_progress
    )
    examples, without, written = [], 0, 0
    for (query, gold), answer in zip(queries, answers, strict=True):
        positives = list(dict.fromkeys(name for g in sorted(gold) for name in by_concept.get(g, []) if name != query))
        if positive_depth is not None:
            ranked = [t for ids, t in zip(answer.ids[:positive_depth], answer.texts[:positive_depth], strict=True)
                      if not gold.isdisjoint(ids) and t in positives]  # fmt: skip
            positives = list(dict.fromkeys(ranked)) or positives
        if not positives:
            without += 1
            continue
        negatives = list(dict.fromkeys(t for ids, t in zip(answer.ids, answer.texts, strict=True)
                                       if gold.isdisjoint(ids) and t not in positives))[:num_negatives]  # fmt: skip
        written += len(negatives)
        examples.append(TrainingExample(query, tuple(positives), tuple(negatives)))
    report = LinkingMiningReport(len(queries), len(examples), without, written)
    return examples, report


class LinkingDevScore:
    """The trainer's dev score for a linker: acc@1 on ``split`` of a linking data folder under
    ``protocol`` (raw: with the format the model carries, ``linking.json``; biosyn: the mention
    parts against BioSyn's dev dictionary, see :func:`~retrievekit.linking.evaluate.evaluate_linking`)."""

    def __init__(
        self, data: str | Path, split: str = "dev", *, protocol: str = "raw", entity_vectors: str = "names",
        batch_size: int = 128,
    ) -> None:  # fmt: skip
        from retrievekit.linking.evaluate import check_protocol

        self.data, self.split, self.protocol = Path(data), split, check_protocol(protocol)
        self.entity_vectors, self.batch_size = entity_vectors, batch_size

    def __call__(self, encoder: Any) -> float:
        from retrievekit.linking.evaluate import evaluate_linking

        result = evaluate_linking(
            self.data, self.split, encoder=encoder, protocol=self.protocol, fmt=saved_format(encoder),
            entity_vectors=self.entity_vectors, batch_size=self.batch_size, show_progress=False,
        )  # fmt: skip
        return result.metrics["acc@1"]
