"""PLAID: ColBERT's compressed multi-vector index with staged search (Santhanam et al., 2022).

Building: k-means centroids over a sample of token vectors (FAISS k-means; ColBERT's sizes: about
``16 * sqrt(120 * documents)`` sampled documents, ``2 ** floor(log2(16 * sqrt(tokens)))`` centroids,
both settable); each token is stored as its nearest centroid's number plus its residual cut into
``2 ** nbits`` buckets per dimension (cut-offs from quantiles of the residuals of held-out tokens,
each bucket's weight the mean of the residuals that fall in it), ``nbits`` 1, 2 or 4 (4 by default,
as PyLate and fast-plaid: on SciFact with a ColBERT fine-tuned from MiniLM, at the default k=10
settings 2 bits keep 91.8% of the exact top 10 at 37 bytes per token vector, 4 bits 96.8% at 69;
benchmarks/README.md). An inverted list maps each centroid to the documents that have a token there.
The search's inner loops (decompression, centroid-score and exact MaxSim) are compiled with numba
(the ``plaid`` extra).

Searching a query (per PLAID's stages): score every centroid against every query token; probe the
``n_ivf_probe`` best centroids of each query token for candidate documents; score candidates
approximately from centroid scores alone, first with centroids below ``centroid_score_threshold``
pruned (keep ``n_full_scores``), then with all of them (keep a quarter); decompress the survivors'
residuals and rank them by exact MaxSim. Unset settings follow PLAID's per-k table
(:data:`PLAID_DEFAULTS`).

``add`` after the build assigns new documents to the existing centroids; when their residuals grow
by more than ``drift_threshold`` over the training tokens' (the centroids no longer fit the data),
the index re-clusters itself from its decompressed vectors (:meth:`PlaidIndex.recluster` does it on
request). ``remove`` leaves tombstones; :meth:`PlaidIndex.compact` drops them.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from retrievekit._optional import require
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index.base import check_count
from retrievekit.index.exact import top_k
from retrievekit.index.multivector import MultiVectorIndex
from retrievekit.outputs import MultiVectors

__all__ = ["PLAID_DEFAULTS", "PlaidIndex", "plaid_search_settings"]

logger = logging.getLogger(__name__)

# Search settings by k. The pruning threshold on centroid scores is PLAID's (its paper's per-k table:
# k=10, 100, 1000). Probed centroids per query token: 8 for every k (fast-plaid's and PyLate's
# default) instead of PLAID's 1/2/4 cells, which assume MS MARCO's 2^18 centroids: on small corpora
# one cell per token loses half the top 10 (tests/test_multivector_indexes.py measures it).
# Candidates kept by the pruned stage (a quarter of them decompressed): 8x, 4x and 2x PLAID's
# 256/1024/4096. PLAID's own counts assume a ColBERTv2 trained on MS MARCO; on SciFact with a ColBERT
# fine-tuned from MiniLM (180-token documents, 4 bits) they keep 92.5% of the exact top 10 at k=10
# against 96.1% for 2,048, where the compression's ceiling (every document decompressed) is 96.4%
# (benchmarks/README.md).
PLAID_DEFAULTS: tuple[tuple[int, dict[str, float]], ...] = (
    (10, {"n_ivf_probe": 8, "centroid_score_threshold": 0.5, "n_full_scores": 2048}),
    (100, {"n_ivf_probe": 8, "centroid_score_threshold": 0.45, "n_full_scores": 4096}),
    (2**62, {"n_ivf_probe": 8, "centroid_score_threshold": 0.4, "n_full_scores": 8192}),
)
_ARRAYS = ("centroids", "codes", "residuals", "offsets", "cutoffs", "weights")
_CHUNK_TOKENS = 65536


def plaid_search_settings(k: int, **given: Any) -> dict[str, Any]:
    """The search settings for ``k``: PLAID's row for the smallest k it covers, where not given.

    >>> plaid_search_settings(10)["n_full_scores"], plaid_search_settings(100, n_ivf_probe=2)["n_ivf_probe"]
    (2048, 2)
    """
    row = next(settings for limit, settings in PLAID_DEFAULTS if k <= limit)
    return {key: (given[key] if given.get(key) is not None else value) for key, value in row.items()}


def _ranges(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of rows ``rows`` of a packed array, and their offsets within that selection.

    >>> _ranges(np.array([0, 2, 5, 6]), np.array([2, 0]))[0].tolist()
    [5, 0, 1]
    """
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return flat, new_offsets


class PlaidIndex(MultiVectorIndex):
    """PLAID over ColBERT token vectors (see the module description)."""

    index_type = "plaid"
    revision = 3  # 2: bucket weights are the bucket means; 2,048 candidates at k=10; 3: ties in position order

    def __init__(
        self,
        dimension: int,
        *,
        nbits: int = 4,
        n_centroids: int | None = None,
        sample_documents: int | None = None,
        kmeans_niters: int = 4,
        seed: int = 0,
        n_ivf_probe: int | None = None,
        centroid_score_threshold: float | None = None,
        n_full_scores: int | None = None,
        drift_threshold: float = 0.25,
        **kwargs: Any,
    ) -> None:
        super().__init__(dimension, **kwargs)
        if nbits not in (1, 2, 4):
            raise ConfigError(f"nbits must be 1, 2 or 4, got {nbits!r}")
        if (dimension * nbits) % 8:
            raise ConfigError(f"dimension x nbits must fill whole bytes; {dimension} x {nbits} does not")
        self.nbits = nbits
        self.n_centroids = None if n_centroids is None else check_count("n_centroids", n_centroids)
        self.sample_documents = None if sample_documents is None else check_count("sample_documents", sample_documents)
        self.kmeans_niters = check_count("kmeans_niters", kmeans_niters)
        self.seed = check_count("seed", seed, minimum=0)
        self.n_ivf_probe = None if n_ivf_probe is None else check_count("n_ivf_probe", n_ivf_probe)
        self.n_full_scores = None if n_full_scores is None else check_count("n_full_scores", n_full_scores)
        if centroid_score_threshold is not None and not (
            isinstance(centroid_score_threshold, int | float) and math.isfinite(centroid_score_threshold)
        ):
            raise ConfigError(f"centroid_score_threshold must be a number, got {centroid_score_threshold!r}")
        self.centroid_score_threshold = centroid_score_threshold
        if not (isinstance(drift_threshold, int | float) and drift_threshold > 0):
            raise ConfigError(f"drift_threshold must be a positive number, got {drift_threshold!r}")
        self.drift_threshold = float(drift_threshold)
        self._arrays: dict[str, np.ndarray] = {}
        self._training_residual = 0.0  # mean squared residual of the held-out training tokens
        self._ivf: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    # ---- config ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return super().config() | {
            "nbits": self.nbits,
            "n_centroids": self.n_centroids,
            "sample_documents": self.sample_documents,
            "kmeans_niters": self.kmeans_niters,
            "seed": self.seed,
            "n_ivf_probe": self.n_ivf_probe,
            "centroid_score_threshold": self.centroid_score_threshold,
            "n_full_scores": self.n_full_scores,
            "drift_threshold": self.drift_threshold,
            "training_residual": self._training_residual,
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> PlaidIndex:
        config = dict(config)
        training_residual = config.pop("training_residual", 0.0)
        index = cls(**config)
        if not isinstance(training_residual, int | float) or not math.isfinite(training_residual):
            raise ConfigError(f"training_residual must be a number, got {training_residual!r}")
        index._training_residual = float(training_residual)
        return index

    @property
    def trained(self) -> bool:
        return "centroids" in self._arrays

    # ---- training ----------------------------------------------------------------------------
    def _train(self, items: MultiVectors) -> None:
        faiss = require("faiss", extra="plaid", purpose="the PLAID index's k-means")
        documents = len(items)
        rng = np.random.default_rng(self.seed)
        wanted = self.sample_documents or int(16 * math.sqrt(120 * documents))
        sample = np.sort(rng.permutation(documents)[: min(documents, wanted)])
        flat, _ = _ranges(items.offsets, sample)
        vectors = np.asarray(items.vectors[np.sort(flat)], dtype=np.float32)
        vectors = vectors[rng.permutation(len(vectors))]
        held = min(50_000, max(1, len(vectors) // 20)) if len(vectors) > 1 else 0
        held_out, train = vectors[:held], vectors[held:] if held else vectors
        k = self.n_centroids or 2 ** math.floor(math.log2(16 * math.sqrt(max(1, items.vectors.shape[0]))))
        k = max(1, min(k, len(train)))
        kmeans = faiss.Kmeans(
            self.dimension, k, niter=self.kmeans_niters, seed=self.seed, spherical=True, verbose=False,
            max_points_per_centroid=256, gpu=False,
        )  # fmt: skip
        kmeans.train(np.ascontiguousarray(train))
        centroids = kmeans.centroids.astype(np.float32)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        # stored as float16 (half the bytes; nothing next to 2-bit residuals): rounded to it now, so
        # the codes and residuals are computed against exactly the centroids a reload gives back
        self._arrays["centroids"] = centroids.astype(np.float16).astype(np.float32)
        sample_for_buckets = held_out if len(held_out) else train[:50_000]
        residuals = sample_for_buckets - centroids[self._assign(sample_for_buckets)]
        options = 2**self.nbits
        cutoff_quantiles = np.linspace(0, 1, options + 1)[1:-1]
        weight_quantiles = (np.linspace(0, 1, options + 1) + 0.5 / options)[:-1]
        flat_residuals = residuals.ravel()
        cutoffs = np.quantile(flat_residuals, cutoff_quantiles).astype(np.float32)
        # each bucket's weight: the mean of the residuals that fall in it (the squared error's
        # minimum for these cut-offs); its middle quantile where a bucket is empty
        weights = np.quantile(flat_residuals, weight_quantiles).astype(np.float32)
        buckets = np.searchsorted(cutoffs, flat_residuals)
        counts = np.bincount(buckets, minlength=options)
        sums = np.bincount(buckets, weights=flat_residuals, minlength=options)
        filled = counts > 0
        weights[filled] = (sums[filled] / counts[filled]).astype(np.float32)
        self._arrays["cutoffs"], self._arrays["weights"] = cutoffs, weights
        self._training_residual = float(np.mean(np.sum(residuals**2, axis=1)))
        for name in ("codes", "residuals", "offsets"):
            self._arrays.pop(name, None)
        self._arrays["codes"] = np.empty(0, dtype=self._code_dtype)
        self._arrays["residuals"] = np.empty((0, self.dimension * self.nbits // 8), dtype=np.uint8)
        self._arrays["offsets"] = np.zeros(1, dtype=np.int64)

    @property
    def _code_dtype(self) -> type:
        return np.uint16 if len(self._arrays["centroids"]) <= 2**16 else np.int32

    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        centroids = self._arrays["centroids"]
        codes = np.empty(len(vectors), dtype=np.int64)
        for start in range(0, len(vectors), 8192):
            codes[start : start + 8192] = np.argmax(vectors[start : start + 8192] @ centroids.T, axis=1)
        return codes

    # ---- compression -------------------------------------------------------------------------
    def _compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Centroid codes, packed residual buckets, and the summed squared residual of ``vectors``."""
        codes = self._assign(vectors)
        residuals = vectors - self._arrays["centroids"][codes]
        buckets = np.searchsorted(self._arrays["cutoffs"], residuals).astype(np.uint8)  # 0 .. 2**nbits - 1
        per_byte = 8 // self.nbits
        grouped = buckets.reshape(len(vectors), -1, per_byte)
        packed = np.zeros(grouped.shape[:2], dtype=np.uint8)
        for j in range(per_byte):
            packed |= grouped[:, :, j] << (self.nbits * (per_byte - 1 - j))
        return codes.astype(self._code_dtype), packed, float(np.sum(residuals**2))

    def _byte_table(self) -> np.ndarray:
        """Each residual byte -> the bucket weights of the dimensions it holds, ``(256, 8 / nbits)``."""
        per_byte = 8 // self.nbits
        values = np.arange(256, dtype=np.uint16)[:, None]
        shifts = self.nbits * (per_byte - 1 - np.arange(per_byte))[None, :]
        buckets = (values >> shifts) & (2**self.nbits - 1)
        return np.ascontiguousarray(self._arrays["weights"][buckets], dtype=np.float32)

    def decompress(self, token_positions: np.ndarray) -> np.ndarray:
        """The approximate (unit-length) token vectors at ``token_positions``."""
        positions = np.ascontiguousarray(token_positions, dtype=np.int64)
        out = np.empty((len(positions), self.dimension), dtype=np.float32)
        if len(positions):
            a = self._arrays
            kernels().decompress_into(
                positions, np.asarray(a["codes"]), np.asarray(a["residuals"]), a["centroids"], self._byte_table(), out
            )  # fmt: skip
        return out

    # ---- adding ------------------------------------------------------------------------------
    def _add_vectors(self, vectors: MultiVectors, start: int) -> None:
        if not self.trained:
            self._train(vectors)
        codes, residuals, squared = [], [], 0.0
        for first in range(0, len(vectors.vectors), _CHUNK_TOKENS):  # bounded memory for memory-mapped input
            chunk = np.asarray(vectors.vectors[first : first + _CHUNK_TOKENS], dtype=np.float32)
            c, r, s = self._compress(chunk)
            codes.append(c)
            residuals.append(r)
            squared += s
        a = self._arrays
        a["codes"] = np.concatenate([np.asarray(a["codes"]), *codes])
        a["residuals"] = np.concatenate([np.asarray(a["residuals"]), *residuals])
        a["offsets"] = np.concatenate([np.asarray(a["offsets"]), vectors.offsets[1:] + a["offsets"][-1]])
        self._ivf = None
        added = max(1, len(vectors.vectors))
        drift = squared / added / max(self._training_residual, 1e-12) - 1
        if start > 0 and drift > self.drift_threshold:
            logger.warning(
                "the added documents' residuals are %.0f%% above the training tokens'; re-clustering", 100 * drift
            )
            self._recluster()

    def recluster(self) -> None:
        """Train new centroids and buckets on the stored (decompressed) vectors and re-encode them."""
        with self.lock.writing():
            self._recluster()

    def _recluster(self) -> None:
        offsets = np.asarray(self._arrays["offsets"])
        total = int(offsets[-1])
        parts = [self.decompress(np.arange(s, min(s + _CHUNK_TOKENS, total))) for s in range(0, total, _CHUNK_TOKENS)]
        vectors = np.concatenate(parts) if parts else np.empty((0, self.dimension), np.float32)
        items = MultiVectors(vectors.astype(np.float32), offsets)
        self._arrays = {}
        self._train(items)
        self._add_vectors(items, 0)

    def _keep_positions(self, alive: np.ndarray) -> None:
        flat, new_offsets = _ranges(np.asarray(self._arrays["offsets"]), alive)
        self._arrays["codes"] = np.asarray(self._arrays["codes"])[flat]
        self._arrays["residuals"] = np.asarray(self._arrays["residuals"])[flat]
        self._arrays["offsets"] = new_offsets
        self._ivf = None

    # ---- searching ---------------------------------------------------------------------------
    def _inverted_lists(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(per document: its distinct centroids + offsets; per centroid: its documents + offsets)."""
        if self._ivf is None:
            offsets = np.asarray(self._arrays["offsets"])
            codes = np.asarray(self._arrays["codes"]).astype(np.int64)
            owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            pairs = np.unique(owner * len(self._arrays["centroids"]) + codes)  # distinct (doc, centroid)
            docs, cents = np.divmod(pairs, len(self._arrays["centroids"]))
            doc_offsets = np.searchsorted(docs, np.arange(len(offsets)))
            order = np.argsort(cents, kind="stable")
            centroid_offsets = np.searchsorted(cents[order], np.arange(len(self._arrays["centroids"]) + 1))
            self._ivf = (
                cents.astype(np.int32),
                doc_offsets.astype(np.int64),
                docs[order].astype(np.int32),
                centroid_offsets.astype(np.int64),
            )
        return self._ivf

    def _search_vectors(self, queries: MultiVectors, k: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        settings = plaid_search_settings(
            k, n_ivf_probe=self.n_ivf_probe, centroid_score_threshold=self.centroid_score_threshold,
            n_full_scores=self.n_full_scores,
        )  # fmt: skip
        lists = self._inverted_lists()
        centroids = self._arrays["centroids"]
        offsets = np.asarray(self._arrays["offsets"])
        codes, residuals = np.asarray(self._arrays["codes"]), np.asarray(self._arrays["residuals"])
        byte_table = self._byte_table()
        n_full = int(settings["n_full_scores"])
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        for row, query in enumerate(queries):
            if not len(query):
                continue
            centroid_scores = query @ centroids.T  # (query tokens, centroids)
            candidates = self._candidates(centroid_scores, int(settings["n_ivf_probe"]), lists, alive)
            if not len(candidates):
                continue
            # (centroids, query tokens): the approximate stages read one contiguous row per code
            by_centroid = np.ascontiguousarray(centroid_scores.T)
            # stage 2: approximate scores from the centroids whose best score passes the threshold
            if len(candidates) > n_full:
                pruned = np.where(
                    by_centroid.max(axis=1, keepdims=True) >= float(settings["centroid_score_threshold"]),
                    by_centroid, np.float32(-np.inf),
                )  # fmt: skip
                candidates = _best(candidates, _centroid_maxsim(pruned, lists, candidates), n_full)
            # stage 3: approximate scores from every centroid of each candidate; keep a quarter
            keep = max(k, n_full // 4)
            if len(candidates) > keep:
                candidates = _best(candidates, _centroid_maxsim(by_centroid, lists, candidates), keep)
            # stage 4: exact MaxSim on the decompressed vectors
            exact = kernels().maxsim_compressed(
                np.ascontiguousarray(query.T, dtype=np.float32), candidates.astype(np.int64), offsets, codes,
                residuals, centroids, byte_table,
            )  # fmt: skip
            values, columns = top_k(exact[None, :], k)
            scores[row, : values.shape[1]] = values[0]
            positions[row, : values.shape[1]] = candidates[columns[0]]
        return scores, positions

    @staticmethod
    def _candidates(
        centroid_scores: np.ndarray, n_probe: int, lists: tuple[np.ndarray, ...], alive: np.ndarray | None
    ) -> np.ndarray:
        """Stage 1: the documents in the inverted lists of each query token's ``n_probe`` best centroids."""
        probe = min(n_probe, centroid_scores.shape[1])
        probed = np.unique(np.argpartition(-centroid_scores, probe - 1, axis=1)[:, :probe])
        flat, _ = _ranges(lists[3], probed)
        candidates = np.unique(lists[2][flat])
        return candidates[alive[candidates]] if alive is not None else candidates

    # ---- persistence -------------------------------------------------------------------------
    def _payload_digest(self) -> str:
        digest = hashlib.sha256()
        for name in _ARRAYS:
            if name in self._arrays:
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(self._arrays[name]).tobytes())
        return digest.hexdigest()

    def _save_payload(self, directory: Path) -> None:
        if not self.trained:
            raise ConfigError("an empty PLAID index has nothing to save; add documents first")
        for name in _ARRAYS:
            array = np.asarray(self._arrays[name])
            np.save(directory / f"plaid_{name}.npy", array.astype(np.float16) if name == "centroids" else array,
                    allow_pickle=False)  # fmt: skip

    def _load_payload(self, directory: Path, *, mmap: bool) -> None:
        mapped = ("codes", "residuals") if mmap else ()  # the large arrays; the rest is read whole
        self._arrays = {
            name: np.load(directory / f"plaid_{name}.npy", mmap_mode="r" if name in mapped else None,
                          allow_pickle=False)
            for name in _ARRAYS
        }  # fmt: skip
        if self._arrays["centroids"].dtype != np.float16:
            raise ArtifactError(f"{directory / 'plaid_centroids.npy'}: centroids must be float16")
        self._arrays["centroids"] = self._arrays["centroids"].astype(np.float32)
        self._ivf = None

    def _check_payload(self, directory: Path) -> None:
        a, where = self._arrays, directory
        centroids, offsets = a["centroids"], a["offsets"]
        tokens = int(offsets[-1]) if len(offsets) else -1
        problems = []
        if centroids.ndim != 2 or centroids.shape[1] != self.dimension or not np.isfinite(centroids).all():
            problems.append(f"centroids are {centroids.shape}, not finite (k, {self.dimension})")
        if len(offsets) != self.table.capacity + 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
            problems.append(f"{len(offsets) - 1} documents' offsets for {self.table.capacity} ids")
        if a["codes"].shape != (tokens,) or (tokens and int(np.max(a["codes"])) >= len(centroids)):
            problems.append(f"{a['codes'].shape} centroid codes for {tokens} tokens and {len(centroids)} centroids")
        if a["residuals"].shape != (tokens, self.dimension * self.nbits // 8) or a["residuals"].dtype != np.uint8:
            problems.append(f"residuals are {a['residuals'].dtype} {a['residuals'].shape}")
        if a["cutoffs"].shape != (2**self.nbits - 1,) or a["weights"].shape != (2**self.nbits,):
            problems.append(f"bucket arrays do not fit nbits={self.nbits}")
        if problems:
            raise ArtifactError(f"{where}: the PLAID payload does not match its manifest: {'; '.join(problems)}")


def kernels() -> Any:
    """The compiled inner loops (:mod:`retrievekit.index.plaid_kernels`), or an error naming the extra."""
    require("numba", extra="plaid", purpose="the PLAID index's compiled search")
    from retrievekit.index import plaid_kernels

    return plaid_kernels


def _centroid_maxsim(by_centroid: np.ndarray, lists: tuple[np.ndarray, ...], documents: np.ndarray) -> np.ndarray:
    """Approximate MaxSim of ``documents`` from their distinct centroids (``lists[0]``, offsets
    ``lists[1]``): for each query token, the best score among the document's centroids, summed.
    ``by_centroid`` is ``(centroids, query tokens)``; a document with no centroid scoring above
    ``-inf`` scores ``-inf``.

    >>> s = np.array([[0.9, 0.2], [0.1, 0.8], [0.4, 0.3]], dtype=np.float32)  # 3 centroids, 2 query tokens
    >>> lists = (np.array([0, 2, 1], dtype=np.int32), np.array([0, 2, 3]))   # doc 0: centroids 0, 2; doc 1: 1
    >>> [round(float(x), 2) for x in _centroid_maxsim(s, lists, np.array([1, 0]))]
    [0.9, 1.2]
    """
    return kernels().centroid_maxsim(by_centroid, lists[0], lists[1], np.asarray(documents, dtype=np.int64))


def _best(candidates: np.ndarray, scores: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` best-scoring of ``candidates``, in ascending order."""
    return np.sort(candidates[top_k(scores[None, :], keep)[1][0]])
