"""Multi-vector indexes: the flat index is exact MaxSim (checked against a brute-force loop), PLAID
finds what the flat index finds, and both add, remove, compact, save and reload."""

from __future__ import annotations

import numpy as np
import pytest

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index.base import load_index
from retrievekit.index.multivector import MultiVectorFlatIndex
from retrievekit.index.plaid import PlaidIndex
from retrievekit.outputs import MultiVectors
from retrievekit.scoring import maxsim_ragged

DIM = 16


def clustered(rng: np.random.Generator, count: int, centers: np.ndarray, lengths=(4, 20)) -> MultiVectors:
    rows = []
    for _ in range(count):
        n = int(rng.integers(*lengths))
        v = centers[rng.integers(0, len(centers), n)] + 0.15 * rng.normal(size=(n, DIM))
        rows.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    return MultiVectors.from_list(rows, DIM)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(100, DIM))
    docs = clustered(rng, 600, centers)
    queries = clustered(rng, 30, centers, lengths=(6, 7))
    return [f"d{i}" for i in range(len(docs))], docs, queries


def brute_force(docs: MultiVectors, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    scores = maxsim_ragged(query, list(docs))
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def test_flat_is_exact_maxsim(data):
    ids, docs, queries = data
    index = MultiVectorFlatIndex(DIM, chunk_tokens=500, query_batch=7)  # many chunks and query batches
    index.add(ids[:300], docs.take(np.arange(300)))
    index.add(ids[300:], docs.take(np.arange(300, 600)))
    hits = index.search(queries, k=10)
    for query, result in zip(queries, hits, strict=True):
        assert result.ids == brute_force(docs, ids, query, 10)
        expected = maxsim_ragged(query, [docs[ids.index(d)] for d in result.ids])
        np.testing.assert_allclose(result.scores, expected, rtol=1e-5)


def test_flat_remove_upsert_save_and_reload(data, tmp_path):
    ids, docs, queries = data
    index = MultiVectorFlatIndex(DIM)
    index.add(ids, docs)
    top = index.search(queries[0], k=3)[0].ids
    assert index.remove(top[:1]) == 1 and top[0] not in index.search(queries[0], k=3)[0].ids
    index.add([top[1]], [docs[0]], upsert=True)  # now the same vectors as d0
    loaded = load_index(index.save(tmp_path / "flat"))
    assert isinstance(loaded, MultiVectorFlatIndex) and len(loaded) == len(ids) - 1
    assert [h.ids for h in loaded.search(queries, 5)] == [h.ids for h in index.search(queries, 5)]
    assert loaded.fingerprint() == index.fingerprint()
    with pytest.raises(ConfigError, match="8-d token vectors; this index holds 16-d"):
        index.add(["x"], [np.ones((3, 8), np.float32)])
    with pytest.raises(ConfigError, match="NaN"):
        index.add(["x"], [np.full((3, DIM), np.nan, np.float32)])


def recall_at(reference: list, found: list, k: int) -> float:
    return float(np.mean([len(set(a.ids[:k]) & set(b.ids[:k])) / k for a, b in zip(reference, found, strict=True)]))


def test_plaid_finds_what_the_flat_index_finds(data):
    ids, docs, queries = data
    flat, plaid = MultiVectorFlatIndex(DIM), PlaidIndex(DIM, nbits=2)  # default search settings: 8 probes
    flat.add(ids, docs)
    plaid.add(ids, docs)
    exact = flat.search(queries, 10)
    assert recall_at(exact, plaid.search(queries, 10), 10) >= 0.93
    one_cell = PlaidIndex(DIM, n_ivf_probe=1)  # PLAID's paper setting for k=10 misses half of them here
    one_cell.add(ids, docs)
    assert recall_at(exact, one_cell.search(queries, 10), 10) < 0.7
    finer = PlaidIndex(DIM, nbits=4, n_ivf_probe=64, n_full_scores=10_000)
    finer.add(ids, docs)
    assert recall_at(exact, finer.search(queries, 10), 10) >= 0.96  # only compression differs


def test_plaid_compresses_to_its_nbits(data):
    ids, docs, _ = data
    for nbits in (1, 2, 4):
        plaid = PlaidIndex(DIM, nbits=nbits, n_centroids=32)
        plaid.add(ids, docs)
        assert plaid._arrays["residuals"].shape == (len(docs.vectors), DIM * nbits // 8)
        error = np.abs(plaid.decompress(np.arange(len(docs.vectors))) - docs.vectors).mean()
        assert error < {1: 0.2, 2: 0.12, 4: 0.05}[nbits]


def test_plaid_compiled_stages_match_their_definitions(data):
    ids, docs, queries = data
    plaid = PlaidIndex(DIM, nbits=2, n_ivf_probe=64, n_full_scores=100_000)  # every document decompressed
    plaid.add(ids, docs)
    a = plaid._arrays
    shifts = 2 * (3 - np.arange(4))  # 4 two-bit buckets per byte, first dimension in the high bits
    buckets = ((a["residuals"][:, :, None] >> shifts) & 3).reshape(len(docs.vectors), DIM)
    expected = a["centroids"][a["codes"].astype(np.int64)] + a["weights"][buckets]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(plaid.decompress(np.arange(len(docs.vectors))), expected, atol=1e-6)
    # the last stage ranks by exact MaxSim over exactly these vectors
    approximate = MultiVectors(expected.astype(np.float32), docs.offsets)
    for query, hits in zip(queries, plaid.search(queries, 10), strict=True):
        assert hits.ids == brute_force(approximate, ids, query, 10)
        scores = maxsim_ragged(query, [approximate[ids.index(d)] for d in hits.ids])
        np.testing.assert_allclose(hits.scores, scores, rtol=1e-5, atol=1e-5)


def test_plaid_add_remove_compact_and_reload(data, tmp_path):
    ids, docs, queries = data
    plaid = PlaidIndex(DIM, nbits=2, n_ivf_probe=16, n_full_scores=4096)
    plaid.add(ids[:400], docs.take(np.arange(400)))
    centroids = plaid._arrays["centroids"].copy()
    plaid.add(ids[400:], docs.take(np.arange(400, 600)))  # same distribution: no re-clustering
    np.testing.assert_array_equal(plaid._arrays["centroids"], centroids)
    flat = MultiVectorFlatIndex(DIM)
    flat.add(ids, docs)
    assert recall_at(flat.search(queries, 10), plaid.search(queries, 10), 10) >= 0.9
    gone = plaid.search(queries[0], 2)[0].ids
    plaid.remove(gone)
    assert not set(gone) & set(plaid.search(queries[0], 10)[0].ids)
    before = [h.ids for h in plaid.search(queries, 10)]
    assert plaid.compact() == 2 and len(plaid) == 598
    assert [h.ids for h in plaid.search(queries, 10)] == before
    loaded = load_index(plaid.save(tmp_path / "plaid"))
    assert isinstance(loaded, PlaidIndex) and [h.ids for h in loaded.search(queries, 10)] == before
    assert loaded.fingerprint() == plaid.fingerprint()


def test_plaid_reclusters_when_new_documents_drift(data):
    ids, docs, _ = data
    rng = np.random.default_rng(5)
    plaid = PlaidIndex(DIM, nbits=2, n_centroids=32)
    plaid.add(ids, docs)
    centroids = plaid._arrays["centroids"].copy()
    far = clustered(rng, 300, rng.normal(size=(40, DIM)) * 3)
    plaid.add([f"far{i}" for i in range(300)], far)
    assert plaid._arrays["centroids"].shape == centroids.shape
    assert not np.array_equal(plaid._arrays["centroids"], centroids)
    assert len(plaid) == 900 and len(plaid.search(far[0], 5)[0]) == 5
    before = plaid._arrays["centroids"].copy()
    plaid.recluster()  # on request too (under the write lock, so searches wait for it)
    assert plaid._arrays["centroids"].shape == before.shape and len(plaid) == 900


def test_plaid_payload_is_checked_at_load(data, tmp_path):
    ids, docs, _ = data
    plaid = PlaidIndex(DIM, nbits=2, n_centroids=16)
    plaid.add(ids, docs)
    folder = plaid.save(tmp_path / "plaid")
    codes = np.load(folder / "plaid_codes.npy")
    np.save(folder / "plaid_codes.npy", codes[:-5])
    with pytest.raises(ArtifactError, match="centroid codes for"):
        load_index(folder)
    with pytest.raises(ConfigError, match="nbits must be 1, 2 or 4"):
        PlaidIndex(DIM, nbits=3)
