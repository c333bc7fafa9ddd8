"""Artifact files are checked against each other and against their manifest: a hostile or damaged
index gives a one-line error naming the file, never wrong results, a stack trace or a followed link."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from retrievekit.cli.main import main
from retrievekit.errors import ArtifactError
from retrievekit.index import ExactIndex, load_index
from retrievekit.index.bm25 import Bm25Index
from retrievekit.index.faiss_index import HnswIndex

pytest.importorskip("faiss")


@pytest.fixture
def exact(tmp_path):
    rng = np.random.default_rng(0)
    index = ExactIndex(8)
    index.add([f"d{i}" for i in range(200)], rng.normal(size=(200, 8)).astype(np.float32))
    return index.save(tmp_path / "exact")


def _config(folder, **changes):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            manifest["config"].pop(key)
        else:
            manifest["config"][key] = value
    path.write_text(json.dumps(manifest))


def _fails(folder, match):
    with pytest.raises(ArtifactError, match=match):
        load_index(folder)


def test_vectors_must_match_the_ids(exact):
    np.save(exact / "vectors.npy", np.zeros((50, 8), dtype=np.float32))
    _fails(exact, r"vectors\.npy: holds float32 vectors of shape \(50, 8\), the ids and config say float32 \(200, 8\)")


def test_nan_vectors_and_bad_dtypes_are_refused(exact):
    vectors = np.load(exact / "vectors.npy")
    vectors[120, 3] = np.nan
    np.save(exact / "vectors.npy", vectors)
    _fails(exact, "NaN or infinite values")
    np.save(exact / "vectors.npy", vectors.astype(np.float64))
    _fails(exact, "holds float64 vectors")


def test_config_ranges_and_missing_keys(exact):
    _config(exact, query_batch=-1)
    _fails(exact, "query_batch must be an integer >= 1, got -1")
    _config(exact, query_batch=256, chunk_size=3.9)
    _fails(exact, "chunk_size must be an integer")
    _config(exact, chunk_size=65536, index_type=None)
    _fails(exact, "lacks 'index_type'")
    _config(exact, index_type="flat", surprise=1)
    _fails(exact, "invalid index config")


def test_truncated_payload_and_links_out_of_the_folder(exact, tmp_path):
    data = (exact / "vectors.npy").read_bytes()
    (exact / "vectors.npy").write_bytes(data[: len(data) // 2])
    _fails(exact, "unreadable index payload")
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes(data)
    (exact / "vectors.npy").unlink()
    os.symlink(outside, exact / "vectors.npy")
    _fails(exact, "outside the artifact")


def test_faiss_file_with_fewer_vectors_than_ids(tmp_path):
    rng = np.random.default_rng(0)
    big, small = HnswIndex(8, M=4), HnswIndex(8, M=4)
    big.add([f"d{i}" for i in range(100)], rng.normal(size=(100, 8)).astype(np.float32))
    small.add([f"d{i}" for i in range(60)], rng.normal(size=(60, 8)).astype(np.float32))
    folder, other = big.save(tmp_path / "big"), small.save(tmp_path / "small")
    (folder / "index.faiss").write_bytes((other / "index.faiss").read_bytes())
    _fails(folder, r"index\.faiss: holds 60 vectors of dimension 8, the ids and config say 100")


def test_bm25_texts_must_match_the_ids(tmp_path):
    pytest.importorskip("bm25s")
    index = Bm25Index()
    index.add(["a", "b", "c"], ["protein folding", "immune cells", "sleep and memory"])
    folder = index.save(tmp_path / "bm25")
    (folder / "texts.json").write_text(json.dumps(["protein folding"]))
    _fails(folder, r"texts\.json: holds 1 texts for 3 ids")


def test_the_cli_prints_one_line_for_a_damaged_index(exact, capsys):
    np.save(exact / "vectors.npy", np.zeros((50, 8), dtype=np.float32))
    with pytest.raises(SystemExit) as stopped:
        main(["search", "--index", str(exact), "-q", "anything", "--model", "minilm"])
    error = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and error.count("\n") == 0 and "vectors.npy" in error and "Traceback" not in error
