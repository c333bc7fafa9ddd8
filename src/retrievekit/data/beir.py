"""BEIR-format collections: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from retrievekit.artifacts import fingerprint_files
from retrievekit.data.readers import iter_documents, read_corpus, read_qrels, read_queries
from retrievekit.data.records import Corpus, Document, Qrels, Queries
from retrievekit.errors import DataFormatError, DatasetNotFoundError
from retrievekit.resolve import resolve_dataset

__all__ = ["BeirDataset", "QrelsCheck", "RetrievalSplit", "check_qrels", "collection_file", "load_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QrelsCheck:
    """What :func:`check_qrels` found: judgements naming documents or queries that do not exist."""

    unknown_documents: int
    unknown_queries: int
    judged_pairs: int

    @property
    def ok(self) -> bool:
        return self.unknown_documents == 0 and self.unknown_queries == 0


def check_qrels(
    qrels: Qrels,
    corpus_ids: set[str] | Corpus,
    query_ids: set[str] | Queries,
    *,
    source: str | Path = "qrels",
    strict: bool = True,
) -> tuple[Qrels, QrelsCheck]:
    """Check qrels against the corpus and queries.

    With ``strict=True`` (the default) any judgement naming an unknown document or query raises
    :class:`DataFormatError`. With ``strict=False`` the problem is logged as a counted warning and
    the returned qrels drop the queries that have no text (they cannot be searched); judgements of
    unknown documents are kept, so they count as relevant-but-unretrievable, as in BEIR.
    """
    docs = set(corpus_ids.ids) if isinstance(corpus_ids, Corpus) else corpus_ids
    queries = set(query_ids.ids) if isinstance(query_ids, Queries) else query_ids
    table = qrels.to_dict()
    bad_queries = [qid for qid in table if qid not in queries]
    bad_docs = [(qid, doc) for qid, judged in table.items() for doc in judged if doc not in docs]
    check = QrelsCheck(len(bad_docs), len(bad_queries), qrels.num_pairs)
    if check.ok:
        return qrels, check
    problems = []
    if bad_docs:
        qid, doc = bad_docs[0]
        problems.append(
            f"{len(bad_docs)} judgement(s) name documents not in the corpus (first: query {qid!r}, document {doc!r})"
        )
    if bad_queries:
        problems.append(f"{len(bad_queries)} judged quer(ies) are not in the queries file (first: {bad_queries[0]!r})")
    message = "; ".join(problems)
    if strict:
        raise DataFormatError(
            source, message + ". Fix the files, or pass strict=False (--no-strict) to warn and continue"
        )
    logger.warning("%s: %s; continuing because strict checking is off", source, message)
    return Qrels({qid: judged for qid, judged in table.items() if qid in queries}), check


@dataclass(frozen=True)
class RetrievalSplit:
    """Everything one evaluation needs: the corpus, the judged queries of a split and their qrels."""

    name: str
    split: str
    corpus: Corpus
    queries: Queries
    qrels: Qrels
    check: QrelsCheck
    unjudged_queries: int = 0  # queries of the collection with no judgement in this split (not evaluated)


class BeirDataset:
    """A BEIR folder on disk. Files are read when asked for, so a pass over the corpus streams."""

    def __init__(self, root: str | Path, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name or self.root.name
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"{self.root} is not a directory")
        self.corpus_path = self._find("corpus")
        self.queries_path = self._find("queries")

    def _find(self, stem: str) -> Path:
        for suffix in (".jsonl", ".tsv"):
            candidate = self.root / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
        raise DatasetNotFoundError(f"{self.root} is not a BEIR folder: it has no {stem}.jsonl")

    @property
    def splits(self) -> list[str]:
        qrels_dir = self.root / "qrels"
        return sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []

    def qrels_path(self, split: str) -> Path:
        path = self.root / "qrels" / f"{split}.tsv"
        if not path.is_file():
            available = ", ".join(self.splits) or "none"
            raise DatasetNotFoundError(f"{self.name} has no split {split!r} (available: {available})")
        return path

    def iter_corpus(self) -> Iterator[Document]:
        """Stream the corpus without holding it in memory."""
        return iter_documents(self.corpus_path)

    def corpus(self) -> Corpus:
        return read_corpus(self.corpus_path)

    def queries(self) -> Queries:
        return read_queries(self.queries_path)

    def qrels(self, split: str) -> Qrels:
        return read_qrels(self.qrels_path(split))

    def fingerprint(self, split: str | None = None) -> str:
        """A content hash of the corpus, the queries and (if given) the split's qrels."""
        files = [self.corpus_path, self.queries_path] + ([self.qrels_path(split)] if split else [])
        return fingerprint_files(files)

    def load(self, split: str = "test", *, strict: bool = True) -> RetrievalSplit:
        """Load a split: the corpus, the queries that have judgements in it, and checked qrels."""
        qrels_path = self.qrels_path(split)
        corpus, queries, qrels = self.corpus(), self.queries(), read_qrels(qrels_path)
        qrels, check = check_qrels(qrels, corpus, queries, source=qrels_path, strict=strict)
        judged = queries.subset(qrels.query_ids)
        return RetrievalSplit(self.name, split, corpus, judged, qrels, check, len(queries) - len(judged))

    def __repr__(self) -> str:
        return f"BeirDataset({self.name!r}, root={str(self.root)!r}, splits={self.splits})"


def load_dataset(name_or_path: str | Path, *, download: bool = True) -> BeirDataset:
    """A BEIR dataset by name (``"scifact"``) or folder; :func:`retrievekit.resolve_dataset` gives the search order."""
    path = resolve_dataset(name_or_path, download=download)
    return BeirDataset(path, name=path.name)


def collection_file(source: str | Path, side: str = "documents") -> Path:
    """A corpus or queries file (JSONL/TSV) as given, or that file of a BEIR folder or dataset name."""
    if side not in ("documents", "queries"):
        raise ValueError(f"side must be 'documents' or 'queries', got {side!r}")
    path = Path(source)
    if path.is_file():
        return path
    beir = load_dataset(source)
    return beir.corpus_path if side == "documents" else beir.queries_path
