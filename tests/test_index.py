from __future__ import annotations

import numpy as np
import pytest

from retrievekit.errors import ConfigError
from retrievekit.index import ExactIndex, load_index
from retrievekit.index.bm25 import Bm25Index
from retrievekit.index.faiss_index import HnswIndex, IvfPqIndex

pytest.importorskip("faiss")


def hand_vectors():
    ids = ["a", "b", "c", "d"]
    vectors = np.array([[1, 0], [0, 2], [1, 1], [-1, 0]], dtype=np.float32)
    return ids, vectors


@pytest.mark.parametrize(
    ("metric", "expected_ids", "expected_scores"),
    [
        ("ip", ["b", "c", "a"], [4.0, 3.0, 1.0]),  # query (1, 2)
        ("cosine", ["c", "b", "a"], [3 / np.sqrt(10), 2 / np.sqrt(5), 1 / np.sqrt(5)]),
        ("l2", ["c", "b", "a"], [-1.0, -1.0 - 0.0 + 1.0 - 1.0 + 1.0, -4.0]),
    ],
)
def test_exact_index_matches_hand_computation(metric, expected_ids, expected_scores):
    ids, vectors = hand_vectors()
    index = ExactIndex(2, metric, chunk_size=3)  # chunks of 3: the running top-k crosses a chunk boundary
    index.add(ids, vectors)
    hits = index.search(np.array([[1, 2]], dtype=np.float32), k=3)[0]
    if metric == "l2":  # squared distances from (1, 2): a=4, b=1, c=1, d=8 -> c and b tie at -1
        assert set(hits.ids[:2]) == {"b", "c"} and hits.ids[2] == "a"
        np.testing.assert_allclose(hits.scores, [-1.0, -1.0, -4.0], atol=1e-6)
    else:
        assert hits.ids == expected_ids
        np.testing.assert_allclose(hits.scores, expected_scores, atol=1e-6)


def test_exact_edge_cases():
    ids, vectors = hand_vectors()
    index = ExactIndex(2)
    assert index.search(np.ones((2, 2)), k=5)[0].ids == []  # empty index: empty results
    index.add(ids, vectors)
    assert len(index.search(np.ones((1, 2)), k=100)[0]) == 4  # k above the size returns what exists
    with pytest.raises(ConfigError, match=r"1 id\(s\) already in the index \(first: 'a'\); pass upsert=True"):
        index.add(["a"], np.zeros((1, 2)))
    index.add(["a"], np.array([[5.0, 5.0]]), upsert=True)
    assert len(index) == 4 and index.search(np.array([[1.0, 1.0]]), k=1)[0].ids == ["a"]
    assert index.remove(["a", "zzz"], missing_ok=True) == 1
    assert "a" not in index.search(np.array([[1.0, 1.0]]), k=4)[0].ids and len(index) == 3
    with pytest.raises(ConfigError, match=r"^id 'zzz' is not in the index$"):
        index.remove(["zzz"])
    with pytest.raises(ConfigError, match=r"^2 ids are not in the index \(first: 'zzz'\)$"):
        index.remove(["b", "zzz", "yyy"])
    assert len(index) == 3  # a failed remove tombstones nothing, "b" included
    with pytest.raises(ConfigError, match=r"shape \(n, 2\)"):
        index.add(["x"], np.zeros((1, 3)))
    with pytest.raises(ConfigError, match="appears twice in one add"):
        index.add(["x", "x"], np.zeros((2, 2)))


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(50, 64)).astype(np.float32)
    return [f"doc{i}" for i in range(len(vectors))], vectors, queries


def recall_against_exact(index, exact, queries, k=10):
    truth = exact.search(queries, k)
    found = index.search(queries, k)
    return np.mean([len(set(a.ids) & set(b.ids)) / k for a, b in zip(truth, found, strict=True)])


def test_exact_chunking_does_not_change_results(random_data):
    ids, vectors, queries = random_data
    small = ExactIndex(64, chunk_size=257, query_batch=7)
    whole = ExactIndex(64, chunk_size=10**6)
    for index in (small, whole):
        index.add(ids, vectors)
    for a, b in zip(small.search(queries, 20), whole.search(queries, 20), strict=True):
        assert a.ids == b.ids
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    brute = queries @ vectors.T
    assert whole.search(queries[:1], 1)[0].ids == [ids[int(np.argmax(brute[0]))]]


@pytest.mark.parametrize("width", [1, 7, 300, 5_000, 70_001])
def test_top_k_is_a_stable_sort_of_each_row_cut_at_k(width):
    """The exact index's selection equals sorting each row by score, equal scores in column order:
    on ties (scores rounded), on removed items (-inf) and wide enough for the group floor."""
    from retrievekit.index.exact import top_k

    rng = np.random.default_rng(width)
    for k in (1, 5, 64, 200):
        scores = rng.normal(size=(6, width)).astype(np.float32)
        scores[1] = np.round(scores[1], 1)  # many equal scores
        scores[2, rng.random(width) < 0.7] = -np.inf
        scores[3] = 0.5  # all equal
        values, columns = top_k(scores, k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert np.array_equal(columns, expected), (width, k)
        assert np.array_equal(values, np.take_along_axis(scores, expected, axis=1))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_hnsw_against_exact(random_data, metric, tmp_path):
    ids, vectors, queries = random_data
    exact, hnsw = ExactIndex(64, metric), HnswIndex(64, metric, M=16, ef_search=128)
    for index in (exact, hnsw):
        index.add(ids, vectors)
    assert recall_against_exact(hnsw, exact, queries) >= 0.95
    hnsw.remove(ids[:1500])
    exact.remove(ids[:1500])
    assert all(not set(h.ids) & set(ids[:1500]) for h in hnsw.search(queries, 10))
    assert recall_against_exact(hnsw, exact, queries) >= 0.9
    hnsw.save(tmp_path / "hnsw")
    loaded = load_index(tmp_path / "hnsw")
    assert isinstance(loaded, HnswIndex) and loaded.ef_search == 128 and loaded.M == 16 and len(loaded) == 1500
    for a, b in zip(hnsw.search(queries, 10), loaded.search(queries, 10), strict=True):
        assert a.ids == b.ids


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_scann_against_exact(random_data, metric, tmp_path):
    from retrievekit.index.scann_index import ScannIndex

    pytest.importorskip("scann")
    ids, vectors, queries = random_data
    exact, scann = ExactIndex(64, metric), ScannIndex(64, metric, leaves=30, leaves_to_search=20)
    for index in (exact, scann):
        index.add(ids, vectors)
    assert recall_against_exact(scann, exact, queries) >= 0.85  # random 64-d vectors: no clusters to exploit
    searched_all = ScannIndex(64, metric, leaves=30, leaves_to_search=30, reorder=3000)
    searched_all.add(ids, vectors)
    for a, b in zip(searched_all.search(queries, 10), exact.search(queries, 10), strict=True):
        assert a.ids == b.ids  # every leaf searched and every candidate rescored: the exact answer
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    scann.remove(ids[:1500])
    exact.remove(ids[:1500])
    assert all(not set(h.ids) & set(ids[:1500]) for h in scann.search(queries, 10))
    assert recall_against_exact(scann, exact, queries) >= 0.8
    scann.save(tmp_path / "scann")
    assert {p.suffix for p in (tmp_path / "scann").iterdir()} == {".npy", ".json"}  # nothing but arrays and JSON
    loaded = load_index(tmp_path / "scann")
    assert isinstance(loaded, ScannIndex) and loaded.config() == scann.config() and len(loaded) == 1500
    for a, b in zip(scann.search(queries, 10), loaded.search(queries, 10), strict=True):
        assert a.ids == b.ids  # rebuilt from the stored vectors: the same searcher


def test_ivfpq_trains_and_persists(random_data, tmp_path):
    ids, vectors, queries = random_data
    exact, ivf = ExactIndex(64), IvfPqIndex(64, nlist=16, m=16, nbits=8, nprobe=16)
    for index in (exact, ivf):
        index.add(ids, vectors)
    assert recall_against_exact(ivf, exact, queries) >= 0.5  # PQ codes of 16 bytes: approximate by design
    ivf.save(tmp_path / "ivf")
    loaded = load_index(tmp_path / "ivf")
    assert loaded.config() == ivf.config()
    for a, b in zip(ivf.search(queries, 10), loaded.search(queries, 10), strict=True):
        assert a.ids == b.ids
    with pytest.raises(ConfigError, match="IVF-PQ training needs at least 256 vectors"):
        IvfPqIndex(64, nlist=16, m=16).add(ids[:10], vectors[:10])
    with pytest.raises(ConfigError, match="must divide the dimension"):
        IvfPqIndex(64, m=7)


def test_exact_save_load_is_identical_and_memory_mapped(random_data, tmp_path):
    ids, vectors, queries = random_data
    index = ExactIndex(64, "cosine", model_fingerprint="sha256:abc", model_name="m")
    index.add(ids, vectors)
    index.remove(["doc3"])
    index.save(tmp_path / "flat")
    loaded = load_index(tmp_path / "flat")
    assert isinstance(loaded._vectors, np.memmap) and loaded.model_fingerprint == "sha256:abc"
    for a, b in zip(index.search(queries, 10), loaded.search(queries, 10), strict=True):
        assert a.ids == b.ids
        np.testing.assert_array_equal(a.scores, b.scores)
    loaded.add(["new"], vectors[:1])  # a loaded index still accepts adds
    assert len(loaded) == len(index) + 1


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_exact_index_filled_in_chunks_allocates_once_and_grows_amortised(metric, tmp_path, monkeypatch):
    """fill_index reserves the rows first, so chunked adds write into one allocation (no copy of
    what is stored); adds beyond it grow the storage geometrically; a loaded, memory-mapped index
    copies into new storage on its next add. Every path stores and finds what one add does."""
    from retrievekit.index import build

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(50)]
    reference = ExactIndex(8, metric)
    reference.add(ids, vectors)
    monkeypatch.setattr(build, "_ADD_ROWS", 7)
    index = ExactIndex(8, metric)
    adds = []
    original = index._add_vectors
    stored = lambda: (index._rows, index._sq_norms.base)  # noqa: E731  (l2's squared norms: a view of one allocation too)
    monkeypatch.setattr(index, "_add_vectors", lambda v, s: (original(v, s), adds.append(stored())))
    build.fill_index(index, ids, vectors)
    assert len(adds) == 8 and all(rows is adds[0][0] and norms is adds[0][1] for rows, norms in adds)
    assert len(adds[0][0]) == 50 and (len(adds[0][1]) == 50 if metric == "l2" else adds[0][1] is None)
    np.testing.assert_array_equal(index._vectors, vectors)
    grown = ExactIndex(8, metric)
    allocations: list[np.ndarray] = []  # held, so no two are ever the same object
    flags: list[np.ndarray] = []  # the id table's live flags grow the same way
    for start in range(0, 50, 3):
        grown.add(ids[start : start + 3], vectors[start : start + 3])
        if not any(rows is grown._rows for rows in allocations):
            allocations.append(grown._rows)
        if not any(rows is grown.table.alive.base for rows in flags):
            flags.append(grown.table.alive.base)
    assert len(allocations) <= 9 and len(grown._rows) < 75  # 17 adds, 1.5x growth: about log1.5(50 / 3) + 1
    assert all(f is not None for f in flags) and len(flags) <= 9  # views of a few allocations, not copies
    assert grown.table.alive.shape == (50,) and grown.table.alive.all()
    loaded = ExactIndex.load(index.save(tmp_path / "flat"))
    loaded.add(["new"], vectors[:1])
    for each in (index, grown):
        np.testing.assert_array_equal(each._vectors, vectors)
        if metric == "l2":
            np.testing.assert_allclose(each._sq_norms, (vectors**2).sum(1), rtol=1e-6)
        for a, b in zip(each.search(vectors[:5], 10), reference.search(vectors[:5], 10), strict=True):
            assert a.ids == b.ids
            np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(loaded._vectors, np.concatenate([vectors, vectors[:1]]))
    assert set(loaded.search(vectors[:1], 2)[0].ids) == {"d0", "new"}
    grown.remove(["d4"])  # a removal writes through to the flags' storage
    assert grown.table.alive.base is flags[-1] and not grown.table.alive[4] and grown.table.alive.sum() == 49
    grown.add(["d4"], vectors[4:5])  # and adds after it keep it
    assert not grown.table.alive[4] and grown.table.alive[50] and len(grown) == 50


def test_failed_index_save_keeps_the_previous_one(random_data, tmp_path, monkeypatch):
    ids, vectors, _ = random_data
    index = ExactIndex(64)
    index.add(ids[:10], vectors[:10])
    index.save(tmp_path / "flat")
    index.add(ids[10:20], vectors[10:20])

    def broken(directory):
        raise OSError("disk full")

    monkeypatch.setattr(index, "_save_payload", broken)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "flat")
    assert len(load_index(tmp_path / "flat")) == 10


DOCS = {
    "d1": "Proteins fold into three dimensional structures that determine their function.",
    "d2": "T cells recognise antigens and coordinate the adaptive immune response.",
    "d3": "Vitamin D deficiency is associated with weaker bones in older adults.",
    "d4": "Sleep helps the brain consolidate memory after learning.",
    "d5": "Folding of proteins is assisted by chaperones in the cell.",
}
QUERIES = ["how do proteins fold", "immune T cells", "bones and vitamin", "memory during sleep"]


def test_bm25_matches_raw_bm25s(tmp_path):
    import bm25s
    import Stemmer

    index = Bm25Index()
    index.add(list(DOCS), list(DOCS.values()))
    stemmer = Stemmer.Stemmer("english")
    raw = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    raw.index(
        bm25s.tokenize(list(DOCS.values()), stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
    )
    positions, scores = raw.retrieve(
        bm25s.tokenize(QUERIES, stopwords="en", stemmer=stemmer, show_progress=False), k=5, show_progress=False
    )
    ids = list(DOCS)
    for ours, raw_positions, raw_scores in zip(index.search(QUERIES, 5), positions, scores, strict=True):
        keep = raw_scores > 0
        assert ours.ids == [ids[p] for p in raw_positions[keep]]
        np.testing.assert_allclose(ours.scores, raw_scores[keep], rtol=1e-6)
    assert index.search(["protein folding"], 5)[0].ids[:2] in (
        ["d1", "d5"],
        ["d5", "d1"],
    )  # stemming joins fold/folding
    index.remove(["d1"])
    assert "d1" not in index.search(["proteins fold"], 5)[0].ids
    index.save(tmp_path / "bm25")
    loaded = load_index(tmp_path / "bm25")
    assert [h.ids for h in loaded.search(QUERIES, 3)] == [h.ids for h in index.search(QUERIES, 3)]
    loaded.add(["d6"], ["Proteins fold quickly"])
    assert loaded.search(["proteins fold"], 1)[0].ids == ["d6"]


def test_cli_builds_a_scann_index_with_its_settings(toy_beir, tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli

    pytest.importorskip("scann")
    out = tmp_path / "scann"
    args = ["index", "build", "--corpus", str(toy_beir), "--model", str(tiny_bert_dir), "--pooling", "mean",
            "--type", "scann", "--leaves", "3", "--leaves-to-search", "2", "--reorder", "7",
            "--output", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    loaded = load_index(out)
    assert (loaded.index_type, loaded.leaves, loaded.leaves_to_search, loaded.reorder) == ("scann", 3, 2, 7)
