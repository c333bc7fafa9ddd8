"""An entity index and the linker that searches it.

An :class:`EntityIndex` holds one vector per *entry*: a dictionary name (a concept has as many as
it has names) or an entity's text (one per concept), each entry naming one or several concepts, in
any registered dense index type. :meth:`EntityLinker.link` encodes mentions with the query tower
(the :class:`~retrievekit.linking.text.LinkingFormat` builds their texts) and answers either
entries (``group="names"``: BioSyn's name-level ranking) or concepts (``group="concepts"``: a
concept's score is the best of its entries, ranked over distinct concepts). With a
``lexical_weight``, an entry's score is BioSyn's ``dense + weight * sparse``, the sparse part the
character n-gram cosine of the mention alone and the entry (:mod:`retrievekit.linking.lexical`),
over the union of both scores' best entries.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.index.build import default_metric, fill_index, vector_index
from retrievekit.linking.abbreviations import expand_abbreviations
from retrievekit.linking.lexical import CharNgramScorer
from retrievekit.linking.records import Entity, Mention, Name
from retrievekit.linking.text import LinkingFormat, register_markers
from retrievekit.retrieval.fusion import check_rerank_fusion
from retrievekit.scoring import similarity_matrix

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
    (``vectors``: already encoded, one row per entry; held once, by the index where it keeps them
    exactly: :meth:`~retrievekit.index.vector.VectorIndex.stored_vectors`); with ``encoder=None``,
    a BM25 index over the entries' words instead (the lexical baseline)."""

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
        self._own_vectors: np.ndarray | None = None  # kept only where the index keeps no exact copy
        self.metric: str | None = None
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
            vectors, self.metric = np.asarray(vectors, dtype=np.float32), default_metric(encoder)
            self.index = vector_index(
                index_type, encoder.dimension, self.metric, model_fingerprint=encoder.fingerprint, **index_options
            )
            fill_index(self.index, positions, vectors)
            if self.index.stored_vectors(positions[:1]) is None:  # score() reads the index's copy where it has one
                self._own_vectors = vectors
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
        if self.encoder is None:
            return list(self.index.search(list(texts), min(depth, len(self.entries))))
        return self.search_vectors(self.encode_queries(texts, max_length, batch_size, show_progress), depth)

    def encode_queries(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int = 128, show_progress: bool = False
    ) -> np.ndarray:
        """The query tower's vectors of ``texts`` (a dense index only)."""
        if self.encoder is None:
            raise ConfigError("a BM25 entity index has no query vectors")
        vectors = self.encoder.encode_queries(
            list(texts), batch_size=batch_size, max_length=max_length, show_progress=show_progress
        )
        return np.asarray(vectors, dtype=np.float32)

    def search_vectors(self, vectors: np.ndarray, depth: int) -> list[Hits]:
        """The ``depth`` best entries of each query vector (entry positions as ids)."""
        return list(self.index.search(vectors, min(depth, len(self.entries))))

    def score(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """One query vector's exact scores against the entries at ``positions`` (the index's metric)."""
        if self.encoder is None or self.metric is None:
            raise ConfigError("a BM25 entity index has no entry vectors to score")
        if self._own_vectors is not None:
            entries = self._own_vectors[positions]
        else:
            entries = self.index.stored_vectors([str(p) for p in positions])
        return np.asarray(similarity_matrix(vector[None, :], entries, self.metric))[0]

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
    ``rerank_top_k`` entries, reading the mention text and the entry text together (the first
    stage's deeper entries follow them, in its order); concepts are then ranked by their best entry.
    Its order replaces the first stage's (BLINK), or with ``rerank_fusion`` (``rrf`` or ``weighted``,
    :func:`~retrievekit.retrieval.fusion.fuse`) is fused with it over those entries, ``rerank_weights``
    being (first stage, reranker). ``rerank_memo`` keeps each (query text, entry position) score, so
    linkers over the same index that share it score a pair once (one memo per index: positions name
    other entries in another).

    ``lexical_weight`` > 0 scores each entry by BioSyn's ``dense + lexical_weight * sparse`` (the
    sparse part: character n-gram TF-IDF cosine of the mention alone and the entry, BioSyn's own)."""

    def __init__(
        self,
        index: EntityIndex,
        fmt: LinkingFormat | None = None,
        *,
        reranker: Any = None,
        rerank_top_k: int = 64,
        rerank_fusion: str | None = None,
        rerank_weights: Sequence[float] | None = None,
        rerank_memo: MutableMapping[tuple[str, str], float] | None = None,
        lexical_weight: float = 0.0,
    ) -> None:
        if rerank_top_k < 1:
            raise ConfigError(f"rerank_top_k must be at least 1, got {rerank_top_k}")
        checked_weights = check_rerank_fusion(rerank_fusion, rerank_weights, has_reranker=reranker is not None)
        if lexical_weight < 0:
            raise ConfigError(f"lexical_weight must be 0 or more, got {lexical_weight}")
        if lexical_weight and index.encoder is None:
            raise ConfigError("lexical_weight adds sparse scores to a dense model's: this entity index is BM25's")
        self.index, self.format = index, fmt or LinkingFormat()
        self.reranker, self.rerank_top_k = reranker, rerank_top_k
        self.rerank_fusion, self.rerank_memo = rerank_fusion, rerank_memo
        self.rerank_weights = checked_weights
        if (reranker_tower := getattr(reranker, "tower", None)) is not None:
            # its tokenizer reads the markers its vocabulary holds (BLINK's) as one token each, as the
            # bi-encoder's does; never grown here: a trained reranker would get random rows
            register_markers([reranker_tower], self.format.markers, grow=False)
        self.lexical_weight = float(lexical_weight)
        self._second_stage: Any = None
        self._lexical: CharNgramScorer | None = None
        if index.encoder is None and self.format.context:
            self.format = dataclasses.replace(self.format, context=False)  # BM25 reads the mention alone

    def query_texts(self, mentions: Sequence[Mention], documents: Mapping[str, str] | None = None) -> list[str]:
        """The texts the query tower reads for ``mentions`` (``documents``: their whole texts, by id)."""
        return self.read(mentions, documents)[0]

    def read(
        self, mentions: Sequence[Mention], documents: Mapping[str, str] | None = None
    ) -> tuple[list[str], list[str] | None]:
        """The query tower's texts for ``mentions`` and, with a ``lexical_weight``, the mentions alone
        (the sparse side's texts), abbreviations expanded once for both."""
        if self.format.abbreviations:
            mentions = expand_abbreviations(mentions, documents)
        fmt = dataclasses.replace(self.format, abbreviations=False)
        encoder = self.index.encoder
        tokenizer = encoder.query_tower.tokenizer if encoder is not None else None
        texts = fmt.mention_texts(mentions, tokenizer, documents)
        return texts, fmt.mention_strings(mentions) if self.lexical_weight else None

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
        lexical: list[str] | None = None
        if all(isinstance(m, str) for m in mentions):
            texts = lexical = [m for m in mentions if isinstance(m, str)]
        elif all(isinstance(m, Mention) for m in mentions):
            texts, lexical = self.read([m for m in mentions if isinstance(m, Mention)], documents)
        else:
            raise ConfigError("link mentions or strings, not a mix")
        return self.link_texts(
            texts, k, group=group, batch_size=batch_size, show_progress=show_progress, lexical_texts=lexical
        )

    def link_texts(
        self, texts: Sequence[str], k: int = 10, *, group: str = "concepts", batch_size: int = 128,
        show_progress: bool = False, lexical_texts: Sequence[str] | None = None,
    ) -> list[Linked]:  # fmt: skip
        """The top ``k`` candidates of each query text, already formatted; ``lexical_texts``: the
        mentions alone, for the sparse scores (the query texts themselves when they hold no context)."""
        if group not in GROUPS:
            raise ConfigError(f"unknown grouping {group!r}; choose one of {', '.join(GROUPS)}")
        if k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        max_length = self.format.query_max_length if self.format.context else None
        entries = self.index.entries
        # concepts: deep enough that the top k distinct concepts are among the entries searched
        depth = k if group == "names" else k * self.index.entries_per_concept
        if self.lexical_weight:
            hits = self._dense_and_sparse(texts, lexical_texts, depth, max_length, batch_size, show_progress)
        else:
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

    def _dense_and_sparse(
        self, texts: Sequence[str], lexical_texts: Sequence[str] | None, depth: int, max_length: int | None,
        batch_size: int, show_progress: bool,
    ) -> list[Hits]:  # fmt: skip
        """BioSyn's ``dense + weight * sparse`` over the union of each query's ``depth`` best entries
        by either score, both scores exact; the ``depth`` best of the union."""
        if lexical_texts is None:
            if self.format.context:
                raise ConfigError("sparse scores read the mentions alone: pass lexical_texts (or link Mentions)")
            lexical_texts = texts
        if len(lexical_texts) != len(texts):
            raise ConfigError(f"{len(lexical_texts)} lexical texts for {len(texts)} queries")
        if self._lexical is None:
            self._lexical = CharNgramScorer([entry.name for entry in self.index.entries])
        vectors = self.index.encode_queries(texts, max_length, batch_size, show_progress)
        dense = self.index.search_vectors(vectors, depth)
        sparse_matrix = self._lexical.scores(lexical_texts)
        sparse_top = CharNgramScorer.best(sparse_matrix, depth)
        combined = []
        for row, (found, (lexical_positions, _)) in enumerate(zip(dense, sparse_top, strict=True)):
            positions = np.union1d(np.asarray([int(i) for i in found.ids], dtype=np.int64), lexical_positions)
            sparse = sparse_matrix[row, positions].toarray().ravel()
            scores = self.index.score(vectors[row], positions) + self.lexical_weight * sparse
            order = np.lexsort((positions, -scores))[: min(depth, len(self.index))]
            combined.append(Hits([str(p) for p in positions[order]], scores[order].astype(np.float32)))
        return combined

    def _rerank(self, texts: Sequence[str], hits: list[Hits]) -> list[Hits]:
        """The first stage's best ``rerank_top_k`` entries of each query, re-scored by the
        cross-encoder (the one reranker implementation every pipeline uses), its order fused with
        the first stage's under ``rerank_fusion``; the first stage's other entries follow, in its order."""
        from retrievekit.retrieval.rerankers import CrossEncoderReranker

        if self._second_stage is None:
            documents = {str(i): entry.name for i, entry in enumerate(self.index.entries)}
            self._second_stage = CrossEncoderReranker(
                self.reranker, documents, name="linking-rerank", memo=self.rerank_memo
            )
        depth = max([1, *(len(h) for h in hits)])
        return self._second_stage.rerank_fused(
            list(texts), hits, depth, top_k=self.rerank_top_k, fusion=self.rerank_fusion, weights=self.rerank_weights
        )
