"""An entity index and the linker that searches it.

An :class:`EntityIndex` holds one vector per *entry*: a dictionary name (a concept has as many as
it has names) or an entity's text (one per concept), each entry naming one or several concepts, in
any registered dense index type. :meth:`EntityLinker.link` encodes mentions with the query tower
(the :class:`~retrievekit.linking.text.LinkingFormat` builds their texts) and answers either
entries (``group="names"``: BioSyn's name-level ranking) or concepts (``group="concepts"``: a
concept's score is the best of its entries, ranked over distinct concepts).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.index.build import default_metric, fill_index, vector_index
from retrievekit.linking.records import Entity, Mention, Name
from retrievekit.linking.text import LinkingFormat

__all__ = ["EntityIndex", "EntityLinker", "Linked"]

GROUPS = ("names", "concepts")


@dataclass(frozen=True)
class Linked:
    """One mention's answer: candidates best first, each a set of concept ids with its score and
    the entry text that won it."""

    ids: list[tuple[str, ...]]
    scores: np.ndarray
    texts: list[str]


class EntityIndex:
    """Entries (text + the concept ids it names) encoded by the document tower into a dense index
    (``vectors``: already encoded, one row per entry); with ``encoder=None``, a BM25 index over the
    entries' words instead (the lexical baseline)."""

    def __init__(
        self,
        encoder: Any,
        entries: Sequence[Name],
        *,
        index_type: str = "flat",
        max_length: int | None = None,
        batch_size: int = 128,
        show_progress: bool = True,
        vectors: np.ndarray | None = None,
        **index_options: Any,
    ) -> None:
        if not entries:
            raise ConfigError("an entity index needs at least one entry")
        self.entries = list(entries)
        self.encoder = encoder
        positions = [str(i) for i in range(len(self.entries))]
        started = time.perf_counter()
        self.index: Any
        if encoder is None:
            from retrievekit.index.bm25 import Bm25Index

            self.index = Bm25Index(**index_options)
            self.index.add(positions, [e.name for e in self.entries])
        else:
            if vectors is None:
                vectors = encoder.encode_documents(
                    [e.name for e in self.entries], batch_size=batch_size, max_length=max_length,
                    show_progress=show_progress,
                )  # fmt: skip
            elif len(vectors) != len(self.entries):
                raise ConfigError(f"{len(vectors)} vectors for {len(self.entries)} entries")
            self.index = vector_index(
                index_type, encoder.dimension, default_metric(encoder), model_fingerprint=encoder.fingerprint,
                **index_options,
            )  # fmt: skip
            fill_index(self.index, positions, np.asarray(vectors, dtype=np.float32))
        self.build_seconds = time.perf_counter() - started
        self.names_by_concept: dict[str, list[str]] = {}  # each concept's entry texts, in entry order
        for entry in self.entries:
            for concept in entry.ids:
                self.names_by_concept.setdefault(concept, []).append(entry.name)
        self.entries_per_concept = max(len(names) for names in self.names_by_concept.values())

    def search(
        self, texts: Sequence[str], depth: int, *, max_length: int | None = None, batch_size: int = 128,
        show_progress: bool = False,
    ) -> list[Hits]:  # fmt: skip
        """The ``depth`` best entries of each query text (entry positions as ids)."""
        depth = min(depth, len(self.entries))
        if self.encoder is None:
            return list(self.index.search(list(texts), depth))
        vectors = self.encoder.encode_queries(
            list(texts), batch_size=batch_size, max_length=max_length, show_progress=show_progress
        )
        return list(self.index.search(np.asarray(vectors, dtype=np.float32), depth))

    @classmethod
    def from_entities(cls, encoder: Any, entities: Sequence[Entity], fmt: LinkingFormat, **options: Any) -> EntityIndex:
        """One entry per entity: ``title TITLE description`` (see :class:`LinkingFormat`)."""
        entries = [Name(fmt.entity_text(e), (e.id,)) for e in entities]
        return cls(encoder, entries, max_length=fmt.entity_max_length, **options)

    def __len__(self) -> int:
        return len(self.entries)


class EntityLinker:
    """Links mentions to an :class:`EntityIndex` with its encoder's query tower (or its BM25).

    ``reranker`` (a cross-encoder, BLINK's second stage) re-scores each mention's best
    ``rerank_top_k`` entries, reading the mention text and the entry text together; concepts are
    then ranked by their best reranked entry."""

    def __init__(
        self, index: EntityIndex, fmt: LinkingFormat | None = None, *, reranker: Any = None, rerank_top_k: int = 64
    ) -> None:
        if rerank_top_k < 1:
            raise ConfigError(f"rerank_top_k must be at least 1, got {rerank_top_k}")
        self.index, self.format = index, fmt or LinkingFormat()
        self.reranker, self.rerank_top_k = reranker, rerank_top_k
        self._second_stage: Any = None
        if index.encoder is None and self.format.context:
            self.format = dataclasses.replace(self.format, context=False)  # BM25 reads the mention alone

    def query_texts(self, mentions: Sequence[Mention], documents: Mapping[str, str] | None = None) -> list[str]:
        """The texts the query tower reads for ``mentions`` (``documents``: their whole texts, by id)."""
        encoder = self.index.encoder
        tokenizer = encoder.query_tower.tokenizer if encoder is not None else None
        return self.format.mention_texts(mentions, tokenizer, documents)

    def link(
        self,
        mentions: Sequence[Mention] | Sequence[str],
        k: int = 10,
        *,
        group: str = "concepts",
        batch_size: int = 128,
        show_progress: bool = False,
        documents: Mapping[str, str] | None = None,
    ) -> list[Linked]:
        """The top ``k`` candidates of each mention (a :class:`Mention`, read with the format, or a
        plain string, encoded as it is); ``documents``: the mentions' whole texts, by id."""
        if all(isinstance(m, str) for m in mentions):
            texts = [m for m in mentions if isinstance(m, str)]
        elif all(isinstance(m, Mention) for m in mentions):
            texts = self.query_texts([m for m in mentions if isinstance(m, Mention)], documents)
        else:
            raise ConfigError("link mentions or strings, not a mix")
        return self.link_texts(texts, k, group=group, batch_size=batch_size, show_progress=show_progress)

    def link_texts(
        self, texts: Sequence[str], k: int = 10, *, group: str = "concepts", batch_size: int = 128,
        show_progress: bool = False,
    ) -> list[Linked]:  # fmt: skip
        """The top ``k`` candidates of each query text, already formatted."""
        if group not in GROUPS:
            raise ConfigError(f"unknown grouping {group!r}; choose one of {', '.join(GROUPS)}")
        if k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        max_length = self.format.query_max_length if self.format.context else None
        entries = self.index.entries
        # concepts: deep enough that the top k distinct concepts are among the entries searched
        depth = k if group == "names" else k * self.index.entries_per_concept
        hits = self.index.search(
            texts, depth, max_length=max_length, batch_size=batch_size, show_progress=show_progress
        )
        if self.reranker is not None:
            hits = self._rerank(texts, hits)
        answers = []
        for found in hits:
            positions = [int(i) for i in found.ids]
            scores = np.asarray(found.scores, dtype=np.float32)
            if group == "names":
                answers.append(
                    Linked([entries[p].ids for p in positions], scores, [entries[p].name for p in positions])
                )
                continue
            best: dict[str, tuple[float, str]] = {}
            for position, score in zip(positions, scores.tolist(), strict=True):
                for concept in entries[position].ids:
                    if concept not in best:  # hits come best first: the first is the concept's max
                        best[concept] = (score, entries[position].name)
                if len(best) >= k:
                    break
            ranked = list(best.items())[:k]
            answers.append(
                Linked([(c,) for c, _ in ranked], np.asarray([s for _, (s, _) in ranked], np.float32),
                       [t for _, (_, t) in ranked])
            )  # fmt: skip
        return answers

    def _rerank(self, texts: Sequence[str], hits: list[Hits]) -> list[Hits]:
        """The first stage's best ``rerank_top_k`` entries of each query, re-scored by the
        cross-encoder (the one reranker implementation every pipeline uses)."""
        from retrievekit.retrieval.rerankers import CrossEncoderReranker

        if self._second_stage is None:
            documents = {str(i): entry.name for i, entry in enumerate(self.index.entries)}
            self._second_stage = CrossEncoderReranker(self.reranker, documents, name="linking-rerank")
        first = [h.top(self.rerank_top_k) for h in hits]
        return list(self._second_stage.rerank(list(texts), first, self.rerank_top_k))
