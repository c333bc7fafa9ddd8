"""The sparse inverted index: exact sparse dot-product top-k (hand-computed and brute force), add,
upsert, remove, compact, save and memory-mapped reload, payload checks."""

from __future__ import annotations

import numpy as np
import pytest

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index.base import load_index
from retrievekit.index.sparse import SparseIndex
from retrievekit.outputs import SparseVectors

VOCAB = 50


def random_sparse(rng: np.random.Generator, count: int, active: int) -> SparseVectors:
    dense = np.zeros((count, VOCAB), dtype=np.float32)
    for row in dense:
        terms = rng.choice(VOCAB, size=int(rng.integers(1, active + 1)), replace=False)
        row[terms] = rng.uniform(0.1, 3.0, size=len(terms))
    return SparseVectors.from_dense(dense)


def brute_force(documents: SparseVectors, ids: list[str], query: SparseVectors, k: int) -> list[tuple[str, float]]:
    scores = (query.to_dense() @ documents.to_dense().T)[0]
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > 0][:k]
    return [(ids[i], float(scores[i])) for i in order]


def test_hand_computed_scores():
    index = SparseIndex(5)
    docs = SparseVectors.from_dense(np.array([[1.0, 0, 2.0, 0, 0], [0, 3.0, 0, 0, 0], [0.5, 0, 0, 0, 4.0]], np.float32))
    index.add(["a", "b", "c"], docs)
    query = SparseVectors.from_dense(np.array([[2.0, 0, 1.0, 0, 1.0]], np.float32))
    hits = index.search(query, k=3)[0]
    # a: 2*1 + 1*2 = 4; c: 2*0.5 + 1*4 = 5; b shares no term and is not returned
    assert hits.ids == ["c", "a"] and hits.scores.tolist() == [5.0, 4.0]


def test_matches_brute_force_and_survives_changes(tmp_path):
    rng = np.random.default_rng(0)
    documents, queries = random_sparse(rng, 300, 12), random_sparse(rng, 20, 5)
    ids = [f"d{i}" for i in range(300)]
    index = SparseIndex(VOCAB)
    index.add(ids[:150], documents.take(np.arange(150)))
    index.add(ids[150:], documents.take(np.arange(150, 300)))
    for q in range(len(queries)):
        query = queries.take(np.array([q]))
        hits = index.search(query, k=10)[0]
        expected = brute_force(documents, ids, query, 10)
        assert hits.ids == [i for i, _ in expected]
        np.testing.assert_allclose(hits.scores, [s for _, s in expected], rtol=1e-5)
    top = index.search(queries, k=3)[0].ids
    assert index.remove(top[:1]) == 1 and top[0] not in index.search(queries, k=3)[0].ids
    index.add([top[1]], documents.take(np.array([0])), upsert=True)  # now d0's vector
    saved = index.save(tmp_path / "sparse")
    loaded = load_index(saved)  # memory-mapped
    assert isinstance(loaded, SparseIndex) and len(loaded) == len(index)
    assert [h.ids for h in loaded.search(queries, 10)] == [h.ids for h in index.search(queries, 10)]
    assert loaded.fingerprint() == index.fingerprint()
    loaded.add(["new"], documents.take(np.array([5])))  # grows after a memory-mapped load
    assert "new" in loaded.search(documents.take(np.array([5])), 3)[0].ids
    assert index.compact() == 2 and len(index) == index.table.capacity
    after = index.search(queries, 10)
    reference = load_index(index.save(tmp_path / "compacted")).search(queries, 10)
    assert [h.ids for h in after] == [h.ids for h in reference]


def test_bad_input_and_payload_fail_clearly(tmp_path):
    index = SparseIndex(VOCAB)
    with pytest.raises(ConfigError, match="vocabulary of 7; this index holds 50"):
        index.add(["x"], SparseVectors.from_dense(np.ones((1, 7), np.float32)))
    bad = SparseVectors(np.array([0, 1]), np.array([3], np.int32), np.array([np.nan], np.float32), VOCAB)
    with pytest.raises(ConfigError, match="NaN"):
        index.add(["x"], bad)
    index.add(["a", "b"], random_sparse(np.random.default_rng(1), 2, 4))
    both = index.vectors_of(["b", "a"])  # in the ids' order
    assert both.indices.tolist() == index.documents.take(np.array([1, 0])).indices.tolist()
    with pytest.raises(ConfigError, match=r"^2 ids are not in this sparse index \(first: 'zz'\)$"):
        index.vectors_of(["a", "zz", "yy"])
    saved = index.save(tmp_path / "s")
    np.save(saved / "sparse_postings.npy", np.array([0, 99, 1], np.int32))
    with pytest.raises(ArtifactError, match="sparse payload does not match"):
        load_index(saved)
