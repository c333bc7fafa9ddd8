"""LanceDB and Milvus Lite behind the index contract: equal to the exact index at their flat
setting, ids/upserts/removals, flush and connect, the manifest in the database's metadata, the
failures a user meets (a removed database, another model, a table someone else made), and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.index import load_index
from retrievekit.index.exact import ExactIndex

BACKENDS = {
    "lancedb": ("lancedb", "retrievekit.index.lancedb_index:LanceDbIndex", ""),
    "milvus": ("pymilvus", "retrievekit.index.milvus_index:MilvusIndex", ".db"),
}


def _class(name: str):
    module, cls = BACKENDS[name][1].split(":")
    pytest.importorskip(BACKENDS[name][0])
    import importlib

    return getattr(importlib.import_module(module), cls)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    """(index class, a fresh URI) for each database."""
    cls = _class(request.param)
    return cls, str(tmp_path / f"db{BACKENDS[request.param][2]}")


def _data(n: int = 600, dim: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        [f"doc-{i}" for i in range(n)],
        rng.standard_normal((n, dim)).astype(np.float32),
        rng.standard_normal((7, dim)).astype(np.float32),
    )


@pytest.mark.parametrize("metric", ["dot", "cosine", "l2"])
def test_flat_setting_equals_the_exact_index(backend, metric):
    cls, uri = backend
    ids, vectors, queries = _data()
    exact = ExactIndex(vectors.shape[1], metric)
    exact.add(ids, vectors)
    index = cls(vectors.shape[1], metric, uri=uri)
    index.add(ids[:300], vectors[:300])
    index.add(ids[300:], vectors[300:])
    index.save(uri)
    assert len(index) == len(ids)
    for got, want in zip(index.search(queries, 10), exact.search(queries, 10), strict=True):
        assert got.ids == want.ids
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=2e-5)
    index.close()


def test_ids_upserts_and_removals(backend):
    cls, uri = backend
    ids, vectors, _ = _data(50)
    index = cls(vectors.shape[1], uri=uri)
    index.add(ids, vectors)
    with pytest.raises(ConfigError, match="already in the index"):
        index.add(ids[:1], vectors[:1])
    with pytest.raises(ConfigError, match="appears twice"):
        index.add(["x", "x"], vectors[:2])
    with pytest.raises(ConfigError, match="shape"):
        index.add(["y"], vectors[:1, :5])
    for store in (index, ExactIndex(vectors.shape[1])):  # the one count check every index's add shares
        with pytest.raises(ConfigError, match="2 ids for 1 items"):
            store.add(["x", "y"], vectors[:1])
    index.add(ids[:1], vectors[9:10], upsert=True)  # doc-0 now holds doc-9's vector
    assert len(index) == 50
    assert set(index.search(vectors[9], 2)[0].ids) == {"doc-0", "doc-9"}
    assert index.remove(["doc-9", "doc-3"]) == 2
    assert index.remove(["doc-9", "nope"], missing_ok=True) == 0
    with pytest.raises(ConfigError, match=r"^2 ids are not in this [\w-]+ index \(first: 'nope'\)$"):
        index.remove(["doc-4", "nope", "gone"])
    assert len(index) == 48
    assert "doc-3" not in index.search(vectors[3], 48)[0].ids
    index.close()


def test_flush_connect_and_the_manifest_in_the_database(backend):
    cls, uri = backend
    ids, vectors, queries = _data(80)
    index = cls(vectors.shape[1], "cosine", uri=uri, model_fingerprint="sha256:model-a", model_name="minilm")
    index.add(ids, vectors)
    before = index.search(queries, 5)
    fingerprint = index.fingerprint()
    assert index.save(uri) is not None
    index.close()
    loaded = load_index(uri)
    assert type(loaded) is cls
    assert (loaded.metric, loaded.model_fingerprint, loaded.model_name, len(loaded)) == (
        "cosine", "sha256:model-a", "minilm", 80
    )  # fmt: skip
    assert loaded.fingerprint() == fingerprint
    for got, want in zip(loaded.search(queries, 5), before, strict=True):
        assert got.ids == want.ids
    loaded.remove(["doc-1"])
    assert loaded.fingerprint() != fingerprint  # a write changes the content fingerprint
    before = loaded.fingerprint()
    loaded.add(["doc-2"], vectors[5:6], upsert=True)  # same count, other content
    assert loaded.fingerprint() != before
    with pytest.raises(ConfigError, match="was built with model"):
        loaded.check_model("sha256:model-b")
    with pytest.raises(ConfigError, match="lives in its database"):
        loaded.save(uri + "-elsewhere")
    loaded.close()
    # a second index at the same URI neither appends to it nor replaces it by accident
    again = cls(vectors.shape[1], uri=uri)
    with pytest.raises(ConfigError, match="already holds a table"):
        again.add(ids[:1], vectors[:1])
    again.close()
    replaced = cls(vectors.shape[1], uri=uri, overwrite=True)
    replaced.add(ids[:2], vectors[:2])
    assert len(replaced) == 2
    replaced.close()


def test_a_removed_database_is_a_clear_error(backend):
    cls, uri = backend
    ids, vectors, _ = _data(20)
    index = cls(vectors.shape[1], uri=uri)
    index.add(ids, vectors)
    index.save()
    index.close()
    shutil.rmtree(uri)
    with pytest.raises(ArtifactError, match=r"no .* database there"):
        cls.connect(uri)
    if cls.index_type == "milvus":  # a *.db path names Milvus even when it is gone
        with pytest.raises(ArtifactError, match="was it moved or removed"):
            load_index(uri)


def test_a_folder_index_named_like_a_database_is_still_a_folder(tmp_path):
    index = ExactIndex(2)
    index.add(["a"], np.ones((1, 2), np.float32))
    assert type(load_index(index.save(tmp_path / "looks-like-milvus.db"))) is ExactIndex


def test_a_table_without_a_retrievekit_manifest_is_refused(tmp_path):
    pytest.importorskip("lancedb")
    import lancedb
    import pyarrow as pa

    from retrievekit.index.lancedb_index import LanceDbIndex

    database = lancedb.connect(str(tmp_path / "foreign"))
    database.create_table("retrievekit", pa.table({"id": ["a"], "vector": [[0.0, 1.0]]}))
    with pytest.raises(ArtifactError, match="no retrievekit manifest"):
        load_index(tmp_path / "foreign")
    with pytest.raises(ArtifactError, match="no table 'other'"):
        LanceDbIndex.connect(tmp_path / "foreign", name="other")


def test_a_tampered_manifest_cannot_widen_anything(tmp_path):
    """The stored manifest is data: an unknown config key or an unknown index type is refused."""
    pytest.importorskip("pymilvus")
    from pymilvus import MilvusClient

    from retrievekit.index.milvus_index import MilvusIndex

    uri = str(tmp_path / "m.db")
    index = MilvusIndex(4, uri=uri)
    index.add(["a"], np.ones((1, 4), np.float32))
    index.close()
    client = MilvusClient(uri)
    raw = json.loads(client.describe_collection("retrievekit")["properties"]["retrievekit.manifest"])
    raw["config"]["trust_remote_code"] = True
    client.alter_collection_properties("retrievekit", properties={"retrievekit.manifest": json.dumps(raw)})
    client.close()
    with pytest.raises(ArtifactError, match="invalid index config"):
        load_index(uri)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_cli_build_search_and_evaluate(name, tmp_path, toy_beir, tiny_bert_dir):
    """``index build --type T --uri``, ``search --index URI`` against the flat folder index of the
    same model, and ``evaluate --index-type T`` (dense and its hybrid with BM25) equal to flat's rows."""
    _class(name)
    from retrievekit.cli.main import cli

    runner = CliRunner()
    uri = str(tmp_path / f"index{BACKENDS[name][2]}")
    model = ["--model", str(tiny_bert_dir), "--pooling", "mean"]
    build = ["index", "build", "--corpus", str(toy_beir), *model]
    result = runner.invoke(cli, [*build, "--type", name, "--uri", uri], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*build, "--type", "flat", "--output", str(tmp_path / "flat")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = {}
    for label, location in (("db", uri), ("flat", str(tmp_path / "flat"))):
        out = tmp_path / f"{label}.json"
        args = ["search", "--index", location, "-q", "protein folding", "-q", "vitamin", "-k", "3", "--json",
                "--model", str(tiny_bert_dir)]  # fmt: skip
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        runs[label] = [json.loads(line) for line in result.output.strip().splitlines()]
        out.write_text(result.output)
    for got, want in zip(runs["db"], runs["flat"], strict=True):
        assert [h["id"] for h in got["results"]] == [h["id"] for h in want["results"]]
    # evaluate: the database row equals the flat row
    metrics = {}
    for index_type in (name, "flat"):
        result = runner.invoke(
            cli,
            ["evaluate", "--dataset", str(toy_beir), *model, "--index-type", index_type, "--no-cache",
             "--retriever", "dense", "bm25", "hybrid",
             "--output", str(tmp_path / f"eval-{index_type}")],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        saved = json.loads((tmp_path / f"eval-{index_type}" / "results.json").read_text())
        metrics[index_type] = {row["retriever"]: row["metrics"] for row in saved["systems"]}
    assert set(metrics[name]) == {"dense", "bm25", "hybrid"}
    for retriever in ("dense", "hybrid"):  # fused with BM25 over the database index as over the flat one
        assert metrics[name][retriever] == pytest.approx(metrics["flat"][retriever], abs=1e-6)


def _sparse(n: int, vocab: int, seed: int):
    from retrievekit.outputs import SparseVectors

    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((n, vocab)) < 0.05, rng.random((n, vocab)), 0.0).astype(np.float32)
    return SparseVectors.from_dense(dense)


def test_milvus_sparse_equals_the_inverted_index(tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("numba")
    from retrievekit.index.milvus_index import MilvusSparseIndex
    from retrievekit.index.sparse import SparseIndex

    documents, queries = _sparse(120, 300, 0), _sparse(6, 300, 1)
    ids = [f"doc-{i}" for i in range(len(documents))]
    exact = SparseIndex(300)
    exact.add(ids, documents)
    uri = str(tmp_path / "sparse.db")
    index = MilvusSparseIndex(300, uri=uri, model_fingerprint="sha256:splade")
    index.add(ids, documents)
    index.save()
    index.close()
    loaded = load_index(uri)
    assert type(loaded) is MilvusSparseIndex and loaded.vocab_size == 300 and len(loaded) == 120
    for got, want in zip(loaded.search(queries, 10), exact.search(queries, 10), strict=True):
        assert got.ids == want.ids
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
    stored = loaded.vectors_of(["doc-7", "doc-3"])
    np.testing.assert_allclose(stored.to_dense(), documents.take(np.array([7, 3])).to_dense(), rtol=1e-6)
    with pytest.raises(ConfigError, match="ann must be 'flat'"):
        MilvusSparseIndex(300, uri=str(tmp_path / "other.db"), ann="hnsw")
    loaded.close()


def test_cli_milvus_sparse_and_the_families_each_backend_refuses(tmp_path, toy_beir, tiny_mlm_dir, tiny_bert_dir):
    pytest.importorskip("pymilvus")
    pytest.importorskip("lancedb")
    from retrievekit.cli.main import cli

    runner = CliRunner()
    build = ["index", "build", "--corpus", str(toy_beir), "--model", str(tiny_mlm_dir)]
    result = runner.invoke(cli, [*build, "--type", "milvus-sparse", "--uri", str(tmp_path / "s.db")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*build, "--type", "sparse", "--output", str(tmp_path / "inverted")])
    assert result.exit_code == 0, result.output
    outputs = []
    for location in (str(tmp_path / "s.db"), str(tmp_path / "inverted")):
        args = ["search", "--index", location, "-q", "vitamin bones", "-k", "3", "--json", "--model", str(tiny_mlm_dir)]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append([h["id"] for h in json.loads(result.output)["results"]])
    assert outputs[0] == outputs[1] and outputs[0]
    # a SPLADE model cannot fill a dense database index, and the error names the types that fit
    from retrievekit.index.build import build_index
    from retrievekit.models.sparse import load_sparse_encoder

    with pytest.raises(ConfigError, match=r"is a sparse model \(its index types: milvus-sparse, sparse\)"):
        build_index(toy_beir, "lancedb", encoder=load_sparse_encoder(tiny_mlm_dir), params={"uri": str(tmp_path / "l")})
