"""The Index contract for every registered type: the same six operations, a registry by family, a
content fingerprint, safe concurrent searches, and the similarity names shared with scoring."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index import ExactIndex, Index, index_class, index_types, load_index, register_index_type
from retrievekit.index.bm25 import Bm25Index
from retrievekit.index.faiss_index import HnswIndex
from retrievekit.index.registry import index_type_info, unregister_index_type
from retrievekit.scoring import similarity_matrix

pytest.importorskip("faiss")
pytest.importorskip("bm25s")

DENSE_PARAMS = {
    "flat": {},
    "hnsw": {"M": 8},
    "ivfpq": {"nlist": 4, "m": 4, "nbits": 4, "nprobe": 4},
    "scann": {"leaves": 4, "leaves_to_search": 4, "brute_force_below": 0},
}


def _items(index: Index, n: int, rng: np.random.Generator):
    if isinstance(index, Bm25Index):
        words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
        return [f"{words[i % 6]} {words[(i * 7) % 6]} doc{i}" for i in range(n)]
    return rng.normal(size=(n, 8)).astype(np.float32)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfpq", "scann", "bm25"])
def test_every_registered_type_honours_the_contract(index_type, tmp_path):
    rng = np.random.default_rng(0)
    cls = index_class(index_type)
    index = cls() if index_type == "bm25" else cls(8, "cosine", **DENSE_PARAMS[index_type])
    assert index.family == index_type_info(index_type).family and index.index_type == index_type
    ids = [f"d{i}" for i in range(40)]
    items = _items(index, 40, rng)
    if hasattr(index, "train"):
        index.train(items)
    index.add(ids, items)
    assert len(index) == 40
    queries = ["alpha doc3", "omega sigma"] if index_type == "bm25" else items[[3, 7]]
    hits = index.search(queries, k=5)
    assert len(hits) == 2 and all(0 < len(h) <= 5 for h in hits)
    if index_type in ("flat", "hnsw", "scann"):
        assert [h.ids[0] for h in hits] == ["d3", "d7"]  # each query is one stored vector
    fingerprint = index.fingerprint()
    assert index.remove([hits[0].ids[0]] * 2) == 1 and len(index) == 39  # a repeat in one call counts once
    assert hits[0].ids[0] not in index.search(queries, k=39)[0].ids
    assert index.fingerprint() != fingerprint
    saved = index.save(tmp_path / "index")
    loaded = cls.load(saved)
    assert type(loaded) is cls and len(loaded) == 39 and loaded.fingerprint() == index.fingerprint()
    before = [(h.ids, h.scores.tolist()) for h in index.search(queries, k=5)]
    assert [(h.ids, h.scores.tolist()) for h in loaded.search(queries, k=5)] == before
    other = "bm25" if index_type != "bm25" else "flat"
    with pytest.raises(ArtifactError, match=f"holds a {index_type} index"):
        index_class(other).load(saved)


@pytest.mark.parametrize("index_type", ["flat", "scann", "hnsw", "ivfpq"])
def test_stored_vectors_are_the_scored_rows_or_none(index_type, tmp_path):
    """flat, ScaNN and HNSW keep every vector exactly and hand back the rows of any ids in their
    order (cosine's normalised rows; also from a loaded, memory-mapped copy; a removed or unknown id
    is a one-line error); IVF-PQ keeps only codes and says so with None."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20, 8)).astype(np.float32) * 3
    cls = index_class(index_type)
    index = cls(8, "cosine", **DENSE_PARAMS[index_type])
    if hasattr(index, "train"):
        index.train(vectors)
    index.add([f"d{i}" for i in range(20)], vectors)
    if index_type == "ivfpq":
        assert index.stored_vectors(["d1"]) is None
        return
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for each in (index, cls.load(index.save(tmp_path / "index"))):
        np.testing.assert_allclose(each.stored_vectors(["d7", "d0", "d7"]), unit[[7, 0, 7]], atol=1e-6)
        with pytest.raises(ConfigError, match=f"id 'd99' is not in this {index_type} index"):
            each.stored_vectors(["d99"])
    index.remove(["d3"])
    with pytest.raises(ConfigError, match="'d3'"):
        index.stored_vectors(["d3"])


def test_registry_by_family_and_a_new_type_registers_itself():
    assert index_types("dense") == ["flat", "hnsw", "ivfpq", "scann", "lancedb", "milvus"] and index_types(
        "lexical"
    ) == ["bm25"]
    with pytest.raises(ConfigError, match="unknown index type 'nope'"):
        index_class("nope")
    with pytest.raises(ConfigError, match="unknown index family"):
        register_index_type("x", "m:C", family="audio")
    register_index_type("exact-copy", "retrievekit.index.exact:ExactIndex", family="dense")
    try:
        assert "exact-copy" in index_types("dense") and index_class("exact-copy") is ExactIndex
    finally:
        unregister_index_type("exact-copy")


def test_similarity_names_are_shared_with_scoring(tmp_path):
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], dtype=np.float32)
    query = np.array([[1.0, 2.0]], dtype=np.float32)
    for metric, canonical in (("ip", "dot"), ("dot", "dot"), ("cosine", "cosine"), ("l2", "l2")):
        index = ExactIndex(2, metric)
        assert index.metric == canonical
        index.add(["a", "b", "c"], vectors)
        hits = index.search(query, k=3)[0]
        expected = similarity_matrix(query, vectors, canonical)[0]
        order = np.argsort(-expected, kind="stable")
        np.testing.assert_allclose(hits.scores, expected[order], rtol=1e-5)
        assert load_index(index.save(tmp_path / metric)).metric == canonical  # saved as the one name


def test_concurrent_searches_with_removals_match_sequential_ones():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    index = HnswIndex(16, "dot", M=8, ef_search=64)
    index.add([f"d{i}" for i in range(500)], vectors)
    index.remove([f"d{i}" for i in range(0, 500, 3)])
    queries = [rng.normal(size=(4, 16)).astype(np.float32) for _ in range(16)]
    expected = [[h.ids for h in index.search(q, k=10)] for q in queries]
    results: dict[int, list[list[str]]] = {}

    def work(position: int) -> None:
        for _ in range(5):
            results[position] = [h.ids for h in index.search(queries[position], k=10)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(16)] == expected
    assert not any(int(d[1:]) % 3 == 0 for ids in expected for row in ids for d in row)
    assert "_bitmap" not in vars(index)  # nothing of a search is kept on the index
