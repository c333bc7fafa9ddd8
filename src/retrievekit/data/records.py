"""Typed records for retrieval data: documents, queries, relevance judgements and ranked runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "Corpus",
    "Document",
    "Qrels",
    "Queries",
    "Query",
    "Run",
    "ScoredDocument",
    "id_problem",
]


def id_problem(value: str) -> str | None:
    """What makes ``value`` unusable as a document or query id, or None. Ids are written to TREC runs
    (whitespace separated) and JSON (UTF-8), so they may hold no whitespace or control characters,
    and no lone surrogates.

    >>> id_problem("doc-1"), id_problem("a b"), id_problem("")
    (None, 'contains whitespace', 'is empty')
    """
    if not value.strip():
        return "is empty"
    if any(c.isspace() for c in value):
        return "contains whitespace"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (invalid Unicode)"
    return None


@dataclass(frozen=True, slots=True)
class Document:
    """One corpus entry. ``title`` is empty when the source has none."""

    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """The text that is encoded: ``title + " " + text`` when there is a title, as BEIR and MTEB do."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    text: str


_T = TypeVar("_T", Document, Query)


class _Collection(Generic[_T]):
    """An ordered, id-indexed collection; iteration follows file order."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[_T]) -> None:
        self._items: dict[str, _T] = {}
        for item in items:
            if item.id in self._items:
                raise ValueError(f"duplicate id {item.id!r}")
            self._items[item.id] = item

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[_T]:
        return iter(self._items.values())

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __getitem__(self, item_id: str) -> _T:
        return self._items[item_id]

    @property
    def ids(self) -> list[str]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items)"


class Corpus(_Collection[Document]):
    """Documents by id, in file order."""

    def texts(self) -> list[str]:
        """The encodable text of every document (title and text), in order."""
        return [doc.full_text for doc in self]


class Queries(_Collection[Query]):
    """Queries by id, in file order."""

    def texts(self) -> list[str]:
        return [query.text for query in self]

    def subset(self, ids: Iterable[str]) -> Queries:
        """The queries whose id is in ``ids``, keeping file order."""
        wanted = set(ids)
        return Queries(query for query in self if query.id in wanted)


class Qrels:
    """Graded relevance judgements: ``qrels[query_id][doc_id] = grade``."""

    __slots__ = ("_judgements",)

    def __init__(self, judgements: Mapping[str, Mapping[str, int]]) -> None:
        self._judgements = {qid: dict(docs) for qid, docs in judgements.items()}

    def __len__(self) -> int:
        """The number of judged queries."""
        return len(self._judgements)

    def __iter__(self) -> Iterator[str]:
        return iter(self._judgements)

    def __contains__(self, query_id: object) -> bool:
        return query_id in self._judgements

    def __getitem__(self, query_id: str) -> dict[str, int]:
        return dict(self._judgements[query_id])

    @property
    def query_ids(self) -> list[str]:
        return list(self._judgements)

    @property
    def num_pairs(self) -> int:
        return sum(len(docs) for docs in self._judgements.values())

    def relevant(self, query_id: str, min_grade: int = 1) -> set[str]:
        return {doc for doc, grade in self._judgements.get(query_id, {}).items() if grade >= min_grade}

    def to_dict(self) -> dict[str, dict[str, int]]:
        """A plain nested dict (a copy), the shape pytrec_eval expects."""
        return {qid: dict(docs) for qid, docs in self._judgements.items()}

    def __repr__(self) -> str:
        return f"Qrels({len(self)} queries, {self.num_pairs} judgements)"


@dataclass(frozen=True, slots=True)
class ScoredDocument:
    doc_id: str
    score: float


class Run:
    """Ranked results per query, best first: ``run[query_id]`` is a list of :class:`ScoredDocument`."""

    __slots__ = ("_ranked",)

    def __init__(self, ranked: Mapping[str, Iterable[ScoredDocument | tuple[str, float]]] | None = None) -> None:
        self._ranked: dict[str, list[ScoredDocument]] = {}
        for qid, docs in (ranked or {}).items():
            items = [d if isinstance(d, ScoredDocument) else ScoredDocument(str(d[0]), float(d[1])) for d in docs]
            # stable sort: best score first, ties keep the given order
            self._ranked[qid] = sorted(items, key=lambda d: -d.score)

    @classmethod
    def from_scores(cls, scores: Mapping[str, Mapping[str, float]]) -> Run:
        return cls({qid: list(docs.items()) for qid, docs in scores.items()})

    def __len__(self) -> int:
        return len(self._ranked)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ranked)

    def __contains__(self, query_id: object) -> bool:
        return query_id in self._ranked

    def __getitem__(self, query_id: str) -> list[ScoredDocument]:
        return list(self._ranked[query_id])

    @property
    def query_ids(self) -> list[str]:
        return list(self._ranked)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{query_id: {doc_id: score}}``, the shape pytrec_eval expects."""
        return {qid: {d.doc_id: d.score for d in docs} for qid, docs in self._ranked.items()}

    def top(self, k: int) -> Run:
        return Run({qid: docs[:k] for qid, docs in self._ranked.items()})

    def __repr__(self) -> str:
        return f"Run({len(self)} queries)"
