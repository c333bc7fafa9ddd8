"""Rerankers that read the query and each candidate's text together (cross-encoders)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from retrievekit.artifacts import fingerprint_json
from retrievekit.errors import ConfigError
from retrievekit.hits import Hits
from retrievekit.retrieval.base import Reranker

if TYPE_CHECKING:
    from retrievekit.models.cross_encoder import CrossEncoder

__all__ = ["CrossEncoderReranker"]


class CrossEncoderReranker(Reranker):
    """Re-scores any first stage's candidates with a cross-encoder: every ``(query, candidate text)``
    pair of all the queries is scored in one call, so the engine batches pairs of similar length
    across queries. ``documents`` maps ids to the text to score (title and body, as indexed)."""

    def __init__(
        self, model: CrossEncoder, documents: Mapping[str, str], *, batch_size: int = 32, name: str = "rerank"
    ) -> None:
        if model.num_labels != 1:
            raise ConfigError(f"reranking needs one score per pair; {model.name!r} has {model.num_labels} labels")
        self.model, self.documents, self.batch_size, self.name = model, documents, batch_size, name

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(
            {"reranker": "cross_encoder", "model": self.model.fingerprint, "runtime": self.model.runtime}
        )

    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]:
        missing = [d for h in hits for d in h.ids if d not in self.documents]
        if missing:
            raise ConfigError(f"{len(missing)} candidate id(s) have no text to rerank with (first: {missing[0]!r})")
        pairs = [(query, self.documents[d]) for query, h in zip(queries, hits, strict=True) for d in h.ids]
        scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress=len(pairs) > 1000)
        results, start = [], 0
        for candidates in hits:
            own = scores[start : start + len(candidates)]
            start += len(candidates)
            order = np.argsort(-own, kind="stable")[:k]
            results.append(Hits([candidates.ids[i] for i in order], own[order].astype(np.float32)))
        return results
