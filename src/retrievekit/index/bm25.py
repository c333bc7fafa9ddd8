"""BM25 on bm25s: English stopwords, optional Snowball stemming (PyStemmer). Needs ``retrievekit[bm25]``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.artifacts import fingerprint_json
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.hits import Hits
from retrievekit.index.base import Index

__all__ = ["Bm25Index"]

_METHODS = ("robertson", "lucene", "bm25l", "bm25+", "atire")  # bm25s' variants


class Bm25Index(Index[Sequence[str], Sequence[str]]):
    """A lexical index over texts. bm25s indexes a whole corpus at once, so ``add`` re-indexes the
    stored texts (fine for incremental additions of modest size); ``remove`` masks documents at search
    time without re-indexing. Scores match raw bm25s with the same settings."""

    index_type = "bm25"
    family = "lexical"

    def __init__(
        self,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stopwords: str | None = "en",
        stemmer: str | None = "english",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(k1, bool) or not isinstance(k1, int | float) or not 0 <= k1 <= 100:
            raise ConfigError(f"k1 must be a number between 0 and 100, got {k1!r}")
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 1:
            raise ConfigError(f"b must be a number between 0 and 1, got {b!r}")
        if method not in _METHODS:
            raise ConfigError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
        self.k1, self.b, self.method, self.stopwords, self.stemmer_language = k1, b, method, stopwords, stemmer
        self._texts: list[str] = []
        self._engine: Any = None  # a bm25s.BM25 (untyped)
        self._stemmer_instance: Any = None

    def config(self) -> dict[str, Any]:
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer_language,
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Bm25Index:
        return cls(**config)

    def _stemmer(self):
        if self.stemmer_language is None:
            return None
        if self._stemmer_instance is None:  # built once: PyStemmer caches stems inside the instance
            stemmer_module = require("Stemmer", extra="bm25", purpose="BM25 stemming")
            self._stemmer_instance = stemmer_module.Stemmer(self.stemmer_language)
        return self._stemmer_instance

    def _tokenize(self, texts: Sequence[str]):
        bm25s = require("bm25s", extra="bm25", purpose="BM25 indexes")
        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self._stemmer(), show_progress=False)

    def add(self, ids: Sequence[str], items: Sequence[str], *, upsert: bool = False) -> None:
        """Add documents (their full text: title and body) under ``ids``."""
        ids, texts = list(ids), list(items)
        if len(ids) != len(texts):
            raise ConfigError(f"{len(ids)} ids for {len(texts)} texts")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text at position {position} is {type(text).__name__}, expected str")
        with self.lock.writing():
            self.table.check_new(ids, upsert=upsert)
            all_texts = self._texts + texts
            self._engine = self._index_texts(all_texts)
            self._texts = all_texts
            self.table.append(ids)

    def _index_texts(self, texts: list[str]) -> Any:
        bm25s = require("bm25s", extra="bm25", purpose="BM25 indexes")
        tokens = self._tokenize(texts)
        if not tokens.vocab:  # bm25s fails on an empty vocabulary
            raise ConfigError(
                f"none of the {len(texts)} documents has a term left after stopword removal; "
                "build the index without stopwords (--no-stopwords) or check the texts"
            )
        engine = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        engine.index(tokens, show_progress=False)
        return engine

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        """Per query text, at most ``k`` (id, score) pairs, best first; documents with no query term are left out."""
        if isinstance(queries, str):
            raise TypeError("pass a list of query strings, not a single string")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        tokens = self._tokenize(queries)
        with self.lock.reading():
            if len(self) == 0:
                return [Hits.empty() for _ in queries]
            k = min(k, len(self))
            mask = self.table.alive.astype(np.float32) if self.table.has_tombstones else None
            positions, scores = self._engine.retrieve(tokens, k=k, show_progress=False, weight_mask=mask, n_threads=1)
            results = []
            for row_positions, row_scores in zip(positions, scores, strict=True):
                keep = row_scores > 0
                results.append(Hits(self.table.lookup(row_positions[keep]), row_scores[keep].astype(np.float32)))
        return results

    def _payload_digest(self) -> str:
        return fingerprint_json(self._texts)

    def _check_payload(self, directory: Path) -> None:
        if len(self._texts) != self.table.capacity or not all(isinstance(t, str) for t in self._texts):
            raise ArtifactError(
                f"{directory / 'texts.json'}: holds {len(self._texts)} texts for {self.table.capacity} ids"
            )
        stored = int(getattr(self._engine, "scores", {}).get("num_docs", self.table.capacity))
        if stored != self.table.capacity:
            raise ArtifactError(f"{directory / 'bm25s'}: indexes {stored} documents for {self.table.capacity} ids")

    def _save_payload(self, directory: Path) -> None:
        self._engine.save(str(directory / "bm25s"), show_progress=False)
        (directory / "texts.json").write_text(json.dumps(self._texts, ensure_ascii=False))

    def _load_payload(self, directory: Path, *, mmap: bool) -> None:
        bm25s = require("bm25s", extra="bm25", purpose="BM25 indexes")
        self._engine = bm25s.BM25.load(str(directory / "bm25s"), mmap=mmap, show_progress=False)
        self._texts = json.loads((directory / "texts.json").read_text(encoding="utf-8"))
