"""Encoding on Ray Data equals local encoding (every family, several blocks and shards), survives a
replica killed mid-run, reports a bad line as the local reader does, and feeds every index builder.

A local Ray with 2 CPUs and one replica (an actor pool as large as the core count would leave no
CPU to the readers on a 2-core machine; the readers here take none)."""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("ray")

from retrievekit.embeddings import encode_rows_to_directory, encode_to_directory, iter_encoded, read_encoded
from retrievekit.errors import DataFormatError
from retrievekit.scale import ModelRecipe, RaySettings, encode_with_ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """90 documents with titles, blank lines among them, in one JSONL file."""
    words = [
        "protein",
        "fold",
        "cell",
        "immune",
        "vitamin",
        "bone",
        "gene",
        "drug",
        "trial",
        "dose",
        "heart",
        "lung",
        "brain",
        "virus",
    ]
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("ray") / "corpus.jsonl"
    lines = []
    for i in range(90):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))
        lines.append(json.dumps({"_id": f"doc{i}", "title": f"title {i % 7}" if i % 3 else "", "text": text}))
        if i % 17 == 0:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def _dense(tiny_bert_dir):
    from retrievekit import load_encoder

    return load_encoder(tiny_bert_dir, pooling="mean")


def test_dense_equals_local_encoding_across_blocks_and_shards(tiny_bert_dir, corpus, tmp_path):
    encoder = _dense(tiny_bert_dir)
    local = encode_to_directory(encoder, corpus, tmp_path / "local", show_progress=False)
    settings = RaySettings(rows_per_block=13, shard_rows=40)
    result = encode_with_ray(encoder, corpus, tmp_path / "ray", settings=settings, batch_size=8,
                             show_progress=False)  # fmt: skip
    assert result.count == 90 and [s["count"] for s in result.config["shards"]] == [40, 40, 10]
    ids, vectors, manifest = read_encoded(tmp_path / "ray")
    assert ids == local.ids
    np.testing.assert_allclose(vectors, local.vectors, atol=1e-6)
    assert manifest.config["model_fingerprint"] == encoder.fingerprint
    # the sharded folder loads as any embeddings folder
    from retrievekit.embeddings import load_embeddings

    loaded = load_embeddings(tmp_path / "ray")
    assert loaded.ids == local.ids and loaded.vectors.shape == (90, encoder.dimension)
    # the manifest is data: a shard name cannot lead out of the folder
    from retrievekit.errors import ArtifactError

    manifest_path = tmp_path / "ray" / "manifest.json"
    raw = json.loads(manifest_path.read_text())
    raw["config"]["shards"][0]["name"] = "../local"
    manifest_path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="a shard name must be shard-NNNNN"):
        read_encoded(tmp_path / "ray")


def test_colbert_and_sparse_equal_local_encoding(tiny_bert_dir, tiny_mlm_dir, corpus, tmp_path):
    from retrievekit.models.colbert import build_colbert, load_colbert
    from retrievekit.models.colbert_format import ColbertConfig
    from retrievekit.models.sparse import load_sparse_encoder

    built = build_colbert(tiny_bert_dir, embedding_size=16, seed=1, config=ColbertConfig(document_length=32))
    colbert = load_colbert(built.save(tmp_path / "colbert"))
    sparse = load_sparse_encoder(tiny_mlm_dir)
    for name, model in (("colbert", colbert), ("sparse", sparse)):
        encode_rows_to_directory(model, corpus, tmp_path / f"{name}-local", show_progress=False)
        encode_with_ray(
            model,
            corpus,
            tmp_path / f"{name}-ray",
            settings=RaySettings(rows_per_block=20, shard_rows=50),
            show_progress=False,
        )
        local_ids, local_rows, _ = read_encoded(tmp_path / f"{name}-local")
        ray_ids, ray_rows, _ = read_encoded(tmp_path / f"{name}-ray")
        assert ray_ids == local_ids and len(list(iter_encoded(tmp_path / f"{name}-ray"))) == 2
        if name == "colbert":
            np.testing.assert_array_equal(ray_rows.offsets, local_rows.offsets)
            np.testing.assert_allclose(ray_rows.vectors, local_rows.vectors, atol=1e-6)
        else:
            np.testing.assert_array_equal(ray_rows.indptr, local_rows.indptr)
            np.testing.assert_array_equal(ray_rows.indices, local_rows.indices)
            np.testing.assert_allclose(ray_rows.values, local_rows.values, atol=1e-6)


class _DyingEncoder:
    """Wraps an encoder; the second batch it is given kills its process, once (a marker file says so)."""

    def __init__(self, model, marker: str) -> None:
        self.model, self.marker, self.calls = model, marker, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode_documents(self, texts, **options):
        self.calls += 1
        if self.calls == 2 and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)  # the replica's process dies mid-run, as a lost node would
        return self.model.encode_documents(texts, **options)


@dataclass(frozen=True)
class _DyingRecipe(ModelRecipe):
    marker: str = ""

    def load(self, device=None):
        return _DyingEncoder(super().load(device), self.marker)


def test_a_replica_killed_mid_run_loses_and_repeats_nothing(tiny_bert_dir, corpus, tmp_path):
    from ray import cloudpickle  # Ray's own copy pickles what it ships to the workers

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    encoder = _dense(tiny_bert_dir)
    marker = tmp_path / "killed"
    base = ModelRecipe.of(encoder)
    recipe = _DyingRecipe(base.family, base.model, base.options, marker=str(marker))
    settings = RaySettings(rows_per_block=10)
    result = encode_with_ray(encoder, corpus, tmp_path / "ray", recipe=recipe, settings=settings, batch_size=8,
                             show_progress=False)  # fmt: skip
    assert marker.exists(), "the replica was never killed: the test tested nothing"
    local = encode_to_directory(encoder, corpus, tmp_path / "local", show_progress=False)
    ids, vectors, _ = read_encoded(result.directory)
    assert ids == local.ids  # every row once, in order
    np.testing.assert_allclose(vectors, local.vectors, atol=1e-6)


def test_a_bad_line_is_the_local_readers_error(tiny_bert_dir, corpus, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = corpus.read_text().splitlines()
    lines[50] = '{"_id": "x", "text": 5}'
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:51: field 'text' must be a string"):
        encode_with_ray(
            _dense(tiny_bert_dir), bad, tmp_path / "out", settings=RaySettings(rows_per_block=10), show_progress=False
        )
    assert not (tmp_path / "out").exists()
    duplicate = tmp_path / "dup.jsonl"
    duplicate.write_text(corpus.read_text() + json.dumps({"_id": "doc3", "text": "again"}) + "\n")
    with pytest.raises(DataFormatError, match="duplicate id 'doc3'"):
        encode_with_ray(
            _dense(tiny_bert_dir),
            duplicate,
            tmp_path / "out",
            settings=RaySettings(rows_per_block=10),
            show_progress=False,
        )


def test_cli_encode_and_index_build_on_ray(tiny_bert_dir, tiny_bert_dir_b, corpus, tmp_path):
    """``encode --engine ray`` writes shards that ``index build --embeddings`` reads, and ``index build
    --engine ray`` gives the index a local build gives."""
    from retrievekit.cli.main import cli
    from retrievekit.index import load_index

    runner = CliRunner()
    model = ["--model", str(tiny_bert_dir), "--pooling", "mean"]
    result = runner.invoke(cli, ["encode", *model, "--input", str(corpus), "--output", str(tmp_path / "emb"),
                                 "--engine", "ray", "--replicas", "1"], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "shard" in result.output
    for label, extra in (("local", []), ("ray", ["--engine", "ray"]),
                         ("embeddings", ["--embeddings", str(tmp_path / "emb")])):  # fmt: skip
        args = ["index", "build", "--corpus", str(corpus), *model, "--type", "flat", "--output", str(tmp_path / label)]
        result = runner.invoke(cli, [*args, *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    # rows encoded by another model are refused, naming both
    args = ["index", "build", "--corpus", str(corpus), "--model", str(tiny_bert_dir_b), "--pooling", "mean",
            "--type", "flat", "--output", str(tmp_path / "wrong"), "--embeddings", str(tmp_path / "emb")]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code != 0 and "was encoded with model" in str(result.exception)
    queries = np.random.default_rng(0).standard_normal((4, _dense(tiny_bert_dir).dimension)).astype(np.float32)
    want = load_index(tmp_path / "local").search(queries, 5)
    for label in ("ray", "embeddings"):
        index = load_index(tmp_path / label)
        assert index.model_fingerprint == load_index(tmp_path / "local").model_fingerprint
        for got, expected in zip(index.search(queries, 5), want, strict=True):
            assert got.ids == expected.ids
            np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)


def test_without_the_extra_the_error_names_it(monkeypatch, tiny_bert_dir, corpus, tmp_path):
    from retrievekit.errors import MissingExtraError
    from retrievekit.scale import ray_encoding

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"retrievekit\[ray\]"):
        ray_encoding._ray()


def test_cli_evaluate_on_ray_equals_local(tiny_bert_dir, toy_beir, tmp_path, monkeypatch):
    """``evaluate --engine ray`` encodes the corpus on Ray: the same metrics as local encoding."""
    import retrievekit.scale
    from retrievekit.cli.main import cli

    calls = []
    real = retrievekit.scale.encode_with_ray

    def counted(*args, **kwargs):
        calls.append(kwargs.get("settings"))
        return real(*args, **kwargs)

    monkeypatch.setattr(retrievekit.scale, "encode_with_ray", counted)
    metrics = {}
    for engine in ("local", "ray"):
        args = ["evaluate", "--dataset", str(toy_beir), "--model", str(tiny_bert_dir), "--pooling", "mean",
                "--retriever", "dense", "hybrid", "--no-cache", "--engine", engine,
                "--output", str(tmp_path / engine)]  # fmt: skip
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / engine / "results.json").read_text())["systems"]
        metrics[engine] = {row["retriever"]: row["metrics"] for row in rows}
    assert len(calls) == 1  # the ray row's corpus went through Ray (once: the hybrid reuses it)
    assert set(metrics["ray"]) == {"dense", "hybrid"}
    for retriever, values in metrics["local"].items():
        assert metrics["ray"][retriever] == pytest.approx(values, abs=1e-6)
    with pytest.raises(Exception, match="apply to --engine ray"):
        CliRunner().invoke(cli, ["evaluate", "--dataset", str(toy_beir), "--replicas", "2"], catch_exceptions=False)
