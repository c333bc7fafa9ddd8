"""Reading sparse vectors over a vocabulary as words: the terms a text is weighted on, and the
terms a query and a document share (SPLADE's vectors, BGE-M3's lexical weights)."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrievekit.outputs import SparseVectors

__all__ = ["TermWeights"]


class TermWeights:
    """Mixed into an encoder whose sparse outputs index its tokenizer's vocabulary (it has ``tower``
    and ``vocab_size``)."""

    tower: Any

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def decode(self, vectors: SparseVectors, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Each row's terms and weights, heaviest first (``top_k`` of them): why a text matches.

        What SPLADE adds beyond the words of the text (its expansion) shows here."""
        vocabulary = self._vocabulary_tokens()
        decoded = []
        for i in range(len(vectors)):
            indices, values = vectors.row(i)
            order = np.argsort(-values, kind="stable")[:top_k]
            decoded.append([(vocabulary[int(indices[j])], float(values[j])) for j in order])
        return decoded

    def explain(self, query: SparseVectors, documents: SparseVectors, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Per document, the terms it shares with the (one-row) ``query`` and what each adds to the
        score (query weight x document weight), largest first: why the document matched."""
        terms, weights = query.row(0)
        by_term = dict(zip(terms.tolist(), weights.tolist(), strict=True))
        vocabulary = self._vocabulary_tokens()
        explained = []
        for i in range(len(documents)):
            indices, values = documents.row(i)
            shared = [(vocabulary[int(t)], by_term[int(t)] * float(v)) for t, v in zip(indices, values, strict=True)
                      if int(t) in by_term]  # fmt: skip
            explained.append(sorted(shared, key=lambda pair: -pair[1])[:top_k])
        return explained

    def _vocabulary_tokens(self) -> list[str]:
        vocabulary: list[str] | None = getattr(self, "_vocabulary", None)
        if vocabulary is None:
            tokens = self.tower.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
            vocabulary = self._vocabulary = [str(token) for token in tokens]
        return vocabulary
