"""The sparse index's compiled inner loop (numba; the ``sparse`` extra): accumulating a query's
sparse dot products over the inverted lists of its terms. Imported through
:func:`retrievekit.index.sparse.kernels`, which names the extra when numba is missing."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["accumulate"]


@numba.njit(cache=True, nogil=True)
def accumulate(
    terms: np.ndarray,
    weights: np.ndarray,
    term_offsets: np.ndarray,
    postings: np.ndarray,
    posting_weights: np.ndarray,
    scores: np.ndarray,
    seen: np.ndarray,
    touched: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Add ``weights[i] * posting_weights[p]`` to ``scores[postings[p]]`` for every posting ``p`` of
    every query term ``terms[i]``; list each document reached in ``touched`` (marking it in ``seen``)
    and return how many there are. ``scores`` and ``seen`` start at 0 and are the caller's to reset."""
    count = 0
    for i in range(terms.shape[0]):
        term = terms[i]
        weight = weights[i]
        for p in range(term_offsets[term], term_offsets[term + 1]):
            document = postings[p]
            if not seen[document]:
                seen[document] = True
                touched[count] = document
                count += 1
            scores[document] += weight * posting_weights[p]
    return count
