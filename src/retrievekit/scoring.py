"""Scoring functions: pure functions shared by indexes, retrievers, rerankers and training.

Every function takes NumPy arrays or torch tensors and answers in the same kind (torch is imported
only when a tensor is passed in). Higher is always better: ``l2`` is the negated squared distance.

Similarity names follow sentence-transformers (``dot``, ``cosine``, ``euclidean``); ``ip`` (FAISS's
"inner product") and ``l2`` are accepted spellings and :func:`canonical_similarity` maps them to one
name, so models, indexes and losses never disagree about what a name means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retrievekit.errors import ConfigError

__all__ = [
    "SIMILARITIES",
    "canonical_similarity",
    "cosine",
    "dot",
    "l2",
    "maxsim",
    "maxsim_packed",
    "maxsim_ragged",
    "pairwise_scores",
    "similarity_matrix",
    "sparse_dot",
    "token_mask",
]

SIMILARITIES = ("dot", "cosine", "l2")
_ALIASES = {"ip": "dot", "inner_product": "dot", "dot_product": "dot", "euclidean": "l2", "cos_sim": "cosine"}

Array = Any  # numpy.ndarray or torch.Tensor: each function returns the kind it was given


def canonical_similarity(name: str) -> str:
    """The one name of a similarity.

    >>> canonical_similarity("ip"), canonical_similarity("cosine"), canonical_similarity("euclidean")
    ('dot', 'cosine', 'l2')
    """
    resolved = _ALIASES.get(name, name)
    if resolved not in SIMILARITIES:
        raise ConfigError(f"unknown similarity {name!r}; choose one of {', '.join(SIMILARITIES)} (or ip, euclidean)")
    return resolved


def _is_torch(x: Array) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _unit(x: Array) -> Array:
    """Rows scaled to unit length (zero rows stay zero)."""
    if _is_torch(x):
        import torch.nn.functional as F

        return F.normalize(x, p=2, dim=-1)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _squared_norms(x: Array) -> Array:
    return (x * x).sum(-1)


def dot(a: Array, b: Array) -> Array:
    """``(n, m)`` inner products of the rows of ``a`` and ``b``.

    >>> dot(np.array([[3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 2.0]])).tolist()
    [[3.0, 8.0]]
    """
    return a @ b.T


def cosine(a: Array, b: Array) -> Array:
    """``(n, m)`` cosine similarities.

    >>> cosine(np.array([[3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 2.0]])).round(6).tolist()
    [[0.6, 0.8]]
    """
    return _unit(a) @ _unit(b).T


def l2(a: Array, b: Array) -> Array:
    """``(n, m)`` negated squared Euclidean distances (higher is closer).

    >>> l2(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [1.0, 0.0]])).tolist()
    [[-25.0, -1.0]]
    """
    return 2 * (a @ b.T) - _squared_norms(a)[:, None] - _squared_norms(b)[None, :]


_MATRIX = {"dot": dot, "cosine": cosine, "l2": l2}


def token_mask(x: Array) -> Array:
    """``(n, L)`` True for the real tokens of padded token vectors ``(n, L, d)``: padding rows are all
    zero (a real token vector, L2-normalised, never is).

    >>> token_mask(np.array([[[0.6, 0.8], [0.0, 0.0]]])).tolist()
    [[True, False]]
    """
    return (x != 0).any(-1)


def similarity_matrix(a: Array, b: Array, similarity: str) -> Array:
    """``(n, m)`` scores of every row of ``a`` against every row of ``b`` under ``similarity``; with
    ``maxsim``, ``a`` and ``b`` are padded token vectors ``(n, La, d)`` / ``(m, Lb, d)`` whose
    padding rows are zero (:func:`token_mask`).

    >>> similarity_matrix(np.array([[1.0, 1.0]]), np.array([[2.0, 0.0]]), "ip").tolist()
    [[2.0]]
    >>> q = np.array([[[1.0, 0.0], [0.0, 1.0]]]); d = np.array([[[1.0, 0.0], [0.0, 0.0]], [[-1.0, 0.0], [0.0, 0.0]]])
    >>> similarity_matrix(q, d, "maxsim").tolist()                  # doc 1: its padding row never wins a max
    [[1.0, -1.0]]
    """
    if similarity == "maxsim":
        return maxsim(a, b, token_mask(a), token_mask(b))
    return _MATRIX[canonical_similarity(similarity)](a, b)


def pairwise_scores(a: Array, b: Array, similarity: str) -> Array:
    """``(n,)`` scores of row ``i`` of ``a`` against row ``i`` of ``b`` (``maxsim``: padded token
    vectors, as :func:`similarity_matrix` takes them).

    >>> pairwise_scores(np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([[3.0, 1.0], [0.0, 3.0]]), "dot").tolist()
    [5.0, 3.0]
    >>> q = np.array([[[1.0, 0.0]], [[0.0, 1.0]]]); d = np.array([[[0.5, 0.5], [1.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])
    >>> pairwise_scores(q, d, "maxsim").tolist()
    [1.0, 2.0]
    """
    if similarity == "maxsim":
        return _pairwise_maxsim(a, b)
    similarity = canonical_similarity(similarity)
    if similarity == "cosine":
        a, b = _unit(a), _unit(b)
    if similarity == "l2":
        return -_squared_norms(a - b)
    return (a * b).sum(-1)


def maxsim(
    queries: Array, documents: Array, query_mask: Array | None = None, document_mask: Array | None = None
) -> Array:
    """Late-interaction scores over padded batches: for each query token its best document token,
    summed over query tokens (ColBERT's MaxSim). ``queries`` ``(Q, Lq, d)``, ``documents``
    ``(D, Ld, d)``; masks ``(Q, Lq)`` / ``(D, Ld)`` mark real tokens (padding never counts).
    Returns ``(Q, D)``.

    >>> q = np.array([[[1.0, 0.0], [0.0, 1.0]]])                      # one query, two tokens
    >>> d = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 2.0], [9.0, 9.0]]])
    >>> maxsim(q, d).tolist()                                        # doc 0: 1 + 0.5; doc 1: 9 + 9
    [[1.5, 18.0]]
    >>> maxsim(q, d, document_mask=np.array([[1, 1], [1, 0]])).tolist()  # doc 1's 2nd token is padding
    [[1.5, 2.0]]
    """
    if _is_torch(queries):
        import torch

        token_scores: Any = torch.einsum("qid,pjd->qpij", queries, documents)
        if document_mask is not None:
            token_scores = token_scores.masked_fill(document_mask[None, :, None, :] == 0, float("-inf"))
        best: Any = token_scores.amax(-1)
        if document_mask is not None:  # a document with no token at all contributes nothing
            best = best.masked_fill((document_mask.sum(-1) == 0)[None, :, None], 0.0)
        if query_mask is not None:
            best = best * query_mask[:, None, :].to(best.dtype)
        return best.sum(-1)
    token_scores = np.einsum("qid,pjd->qpij", queries, documents)
    if document_mask is not None:
        token_scores = np.where(document_mask[None, :, None, :] == 0, -np.inf, token_scores)
    best = token_scores.max(-1) if token_scores.shape[-1] else np.zeros(token_scores.shape[:-1])
    if document_mask is not None:
        best = np.where((document_mask.sum(-1) == 0)[None, :, None], 0.0, best)
    if query_mask is not None:
        best = best * query_mask[:, None, :]
    return best.sum(-1)


def _pairwise_maxsim(queries: Array, documents: Array) -> Array:
    query_mask, document_mask = token_mask(queries), token_mask(documents)
    if _is_torch(queries):
        import torch

        token_scores: Any = torch.einsum("nid,njd->nij", queries, documents)
        token_scores = token_scores.masked_fill(~document_mask[:, None, :], float("-inf"))
        best: Any = token_scores.amax(-1).masked_fill(~document_mask.any(-1)[:, None], 0.0)
        return (best * query_mask.to(best.dtype)).sum(-1)
    token_scores = np.einsum("nid,njd->nij", queries, documents)
    token_scores = np.where(document_mask[:, None, :], token_scores, -np.inf)
    best = np.where(document_mask.any(-1)[:, None], token_scores.max(-1), 0.0)
    return (best * query_mask).sum(-1)


def maxsim_ragged(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """MaxSim of one query ``(Lq, d)`` against documents of any lengths ``[(Ld_i, d), ...]``; ``(D,)``.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> maxsim_ragged(q, [np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.0, 2.0]])]).tolist()
    [1.5, 2.0]
    """
    if not len(documents):
        return np.empty(0, dtype=np.float32)
    lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
    stacked = np.concatenate(list(documents)) if lengths.sum() else np.empty((0, query.shape[1]), dtype=query.dtype)
    token_scores = query @ stacked.T  # (Lq, sum Ld): the max runs along contiguous rows
    scores = np.zeros(len(documents), dtype=np.result_type(query, stacked))
    present = lengths > 0
    if present.any():
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[present]
        scores[present] = np.maximum.reduceat(token_scores, starts, axis=1).sum(axis=0)
    return scores


def maxsim_packed(
    query_vectors: np.ndarray, query_offsets: np.ndarray, document_vectors: np.ndarray, document_offsets: np.ndarray
) -> np.ndarray:
    """MaxSim of every query against every document, both packed as token vectors plus offsets (the
    layout of :class:`~retrievekit.outputs.MultiVectors`): one matrix product, then a max per
    document and a sum per query. ``(Q, D)``; a text without tokens scores 0.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])            # query 0: 2 tokens, query 1: 1
    >>> d = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])            # doc 0: 2 tokens, doc 1: 1
    >>> maxsim_packed(q, np.array([0, 2, 3]), d, np.array([0, 2, 3])).tolist()
    [[1.5, 2.0], [1.0, 2.0]]
    """
    num_queries, num_documents = len(query_offsets) - 1, len(document_offsets) - 1
    scores = np.zeros((num_queries, num_documents), dtype=np.float32)
    query_present = np.diff(query_offsets) > 0
    document_present = np.diff(document_offsets) > 0
    if not query_present.any() or not document_present.any():
        return scores
    # (query tokens, document tokens): the max runs along rows, over contiguous memory (~20x faster
    # than numpy's reduceat down the columns of the transposed product)
    token_scores = query_vectors @ document_vectors.T
    best = np.maximum.reduceat(token_scores, document_offsets[:-1][document_present], axis=1)
    per_query = np.add.reduceat(best, query_offsets[:-1][query_present], axis=0)
    scores[np.ix_(query_present, document_present)] = per_query
    return scores


def sparse_dot(
    query_indices: Sequence[np.ndarray],
    query_values: Sequence[np.ndarray],
    document_indptr: np.ndarray,
    document_indices: np.ndarray,
    document_values: np.ndarray,
) -> np.ndarray:
    """Dot products of sparse queries (one ``(indices, values)`` pair each) with CSR documents;
    ``(Q, D)`` dense scores.

    >>> indptr, indices, values = np.array([0, 2, 3]), np.array([1, 5, 5]), np.array([2.0, 1.0, 4.0])
    >>> sparse_dot([np.array([5, 7])], [np.array([0.5, 3.0])], indptr, indices, values).tolist()
    [[0.5, 2.0]]
    """
    num_documents = len(document_indptr) - 1
    scores = np.zeros((len(query_indices), num_documents), dtype=np.float32)
    if not len(document_indices):
        return scores
    owner = np.repeat(np.arange(num_documents), np.diff(document_indptr))
    for row, (terms, weights) in enumerate(zip(query_indices, query_values, strict=True)):
        if not len(terms):
            continue
        order = np.argsort(terms)
        terms, weights = np.asarray(terms)[order], np.asarray(weights, dtype=np.float32)[order]
        slot = np.searchsorted(terms, document_indices)
        slot = np.minimum(slot, len(terms) - 1)
        hit = terms[slot] == document_indices
        np.add.at(scores[row], owner[hit], weights[slot[hit]] * document_values[hit])
    return scores
