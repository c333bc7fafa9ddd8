"""BioSyn's sparse scores: how much a mention and a name share in characters.

BioSyn (Sung et al., 2020) scores a name by ``dense + weight * sparse``, the sparse part being the
cosine of TF-IDF vectors over character 1- and 2-grams fitted on the dictionary's names
(scikit-learn's ``TfidfVectorizer(analyzer="char", ngram_range=(1, 2))``, as BioSyn builds it).
It catches spellings a dense model blurs (``ovarian`` / ``ovary``, word order, hyphens) and is
cheap: one sparse product per batch of mentions.

>>> scorer = CharNgramScorer(["breast cancer", "ovarian cancer", "cancer of breast"])
>>> positions, scores = scorer.top(["breast cancers"], 2)[0]
>>> positions.tolist(), bool(scores[0] > scores[1] > 0)
([0, 2], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.errors import ConfigError

__all__ = ["CharNgramScorer"]


class CharNgramScorer:
    """TF-IDF over character 1- and 2-grams of ``names`` (lower-cased), scored by cosine."""

    def __init__(self, names: Sequence[str], *, ngram_range: tuple[int, int] = (1, 2)) -> None:
        if not names:
            raise ConfigError("character n-gram scores need at least one name")
        text = require("sklearn.feature_extraction.text", extra="linking", purpose="BioSyn's sparse name scores")
        self._vectorizer = text.TfidfVectorizer(analyzer="char", ngram_range=ngram_range)
        self._names = self._vectorizer.fit_transform(list(names)).T.tocsr()  # n-grams x names, rows unit length

    def scores(self, texts: Sequence[str]) -> Any:
        """A sparse ``len(texts) x len(names)`` matrix of cosines (CSR)."""
        return (self._vectorizer.transform(list(texts)) @ self._names).tocsr()

    def top(self, texts: Sequence[str], depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each text's ``depth`` best names: positions and scores, best first (ties by position)."""
        return self.best(self.scores(texts), depth)

    @staticmethod
    def best(matrix: Any, depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each row's ``depth`` best names of a :meth:`scores` matrix, as :meth:`top` gives them."""
        found = []
        for row in range(matrix.shape[0]):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            positions, values = matrix.indices[start:end], matrix.data[start:end]
            order = np.lexsort((positions, -values))[:depth]
            found.append((positions[order].astype(np.int64), values[order].astype(np.float32)))
        return found
