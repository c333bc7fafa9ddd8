"""The PLAID index's compiled inner loops (numba; the ``plaid`` extra): decompressing token vectors
and scoring documents from centroid scores. Imported through :func:`retrievekit.index.plaid.kernels`,
which names the extra when numba is missing."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["centroid_maxsim", "decompress_into", "maxsim_compressed"]


@numba.njit(cache=True, nogil=True)
def decompress_into(
    positions: np.ndarray,
    codes: np.ndarray,
    residuals: np.ndarray,
    centroids: np.ndarray,
    byte_table: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[i]`` = the unit-length ``centroids[codes[p]] + residual(p)`` for ``p = positions[i]``;
    each residual byte ``b`` holds ``byte_table[b]`` (the bucket weights of its dimensions)."""
    per_byte = byte_table.shape[1]
    for row in range(positions.shape[0]):
        p = positions[row]
        c = codes[p]
        norm = 0.0
        for j in range(residuals.shape[1]):
            b = residuals[p, j]
            for s in range(per_byte):
                value = centroids[c, j * per_byte + s] + byte_table[b, s]
                out[row, j * per_byte + s] = value
                norm += value * value
        scale = 1.0 / max(math.sqrt(norm), 1e-12)
        for d in range(out.shape[1]):
            out[row, d] *= scale


@numba.njit(cache=True, nogil=True)
def centroid_maxsim(
    scores_by_centroid: np.ndarray, doc_codes: np.ndarray, doc_offsets: np.ndarray, documents: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """Approximate MaxSim of ``documents`` from their distinct centroids: per query token, the best
    of ``scores_by_centroid[code]`` (a ``(centroids, query tokens)`` array) over the document's
    codes, summed. A document without codes (or whose codes all score ``-inf``) scores ``-inf``."""
    tokens = scores_by_centroid.shape[1]
    out = np.empty(documents.shape[0], dtype=np.float32)
    best = np.empty(tokens, dtype=np.float32)
    for i in range(documents.shape[0]):
        d = documents[i]
        best[:] = -np.inf
        for position in range(doc_offsets[d], doc_offsets[d + 1]):
            row = scores_by_centroid[doc_codes[position]]
            for t in range(tokens):
                if row[t] > best[t]:
                    best[t] = row[t]
        total = 0.0
        for t in range(tokens):
            total += best[t]
        out[i] = total
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def maxsim_compressed(
    query_t: np.ndarray,
    documents: np.ndarray,
    offsets: np.ndarray,
    codes: np.ndarray,
    residuals: np.ndarray,
    centroids: np.ndarray,
    byte_table: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """Exact MaxSim of one query (``query_t``: ``(dim, query tokens)``) against ``documents``
    decompressed one at a time into a reused tile (:func:`decompress_into`'s vectors, never all in
    memory at once): one matrix product per document, each token's scores scaled by its inverse
    norm, the best per query token summed. A document without tokens scores 0."""
    per_byte = byte_table.shape[1]
    dim, tokens = query_t.shape
    out = np.zeros(documents.shape[0], dtype=np.float32)
    longest = 1
    for i in range(documents.shape[0]):
        longest = max(longest, offsets[documents[i] + 1] - offsets[documents[i]])
    tile = np.empty((longest, dim), dtype=np.float32)
    inverse_norms = np.empty(longest, dtype=np.float32)
    best = np.empty(tokens, dtype=np.float32)
    for i in range(documents.shape[0]):
        start = offsets[documents[i]]
        n = offsets[documents[i] + 1] - start
        if n == 0:
            continue
        for t in range(n):
            row, centroid, packed = tile[t], centroids[codes[start + t]], residuals[start + t]
            for j in range(packed.shape[0]):
                weights = byte_table[packed[j]]
                for s in range(per_byte):
                    row[j * per_byte + s] = centroid[j * per_byte + s] + weights[s]
            norm = np.float32(0.0)
            for d in range(dim):
                norm += row[d] * row[d]
            inverse_norms[t] = 1.0 / max(math.sqrt(norm), 1e-12)
        scores = np.dot(tile[:n], query_t)  # (document tokens, query tokens)
        best[:] = -np.inf
        for t in range(n):
            for q in range(tokens):
                value = scores[t, q] * inverse_norms[t]
                if value > best[q]:
                    best[q] = value
        out[i] = best.sum()
    return out
