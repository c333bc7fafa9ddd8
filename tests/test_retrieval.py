from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retrievekit import load_encoder
from retrievekit.data import read_trec_run
from retrievekit.errors import ConfigError
from retrievekit.index import Hits, load_index
from retrievekit.index.build import build_index
from retrievekit.retrieval import (
    Bm25Retriever,
    DenseRetriever,
    HybridRetriever,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)

pytest.importorskip("faiss")


def test_rrf_and_weighted_fusion_by_hand():
    dense = Hits(["a", "b", "c"], np.array([0.9, 0.8, 0.1]))
    lexical = Hits(["c", "a"], np.array([12.0, 2.0]))
    fused = reciprocal_rank_fusion([dense, lexical], k=3, rrf_k=60)
    assert fused.ids == ["a", "c", "b"]
    np.testing.assert_allclose(fused.scores, [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62], rtol=1e-6)
    weighted = weighted_score_fusion([dense, lexical], k=3, weights=[0.7, 0.3])
    # dense min-max: a=1, b=0.875, c=0; lexical: c=1, a=0
    assert weighted.ids == ["a", "b", "c"]
    np.testing.assert_allclose(weighted.scores, [0.7, 0.7 * 0.875, 0.3], rtol=1e-6)
    with pytest.raises(ConfigError, match="2 weights for 3 result lists"):
        weighted_score_fusion([dense, lexical, dense], k=3, weights=[1, 1])


def test_dense_bm25_and_hybrid_retrievers_on_the_toy_set(toy_beir, tiny_bert_dir):
    encoder = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    dense = DenseRetriever(encoder, build_index(toy_beir, "flat", encoder=encoder, show_progress=False))
    bm25 = Bm25Retriever(build_index(toy_beir, "bm25"))
    hybrid = HybridRetriever([dense, bm25], fusion="rrf")
    from retrievekit.data import BeirDataset

    queries = BeirDataset(toy_beir).load("test").queries
    run = bm25.retrieve(queries, k=3)
    assert run["q1"][0].doc_id == "d1" and run["q3"][0].doc_id == "d4"  # lexical matches on the toy set
    fused = hybrid.retrieve(queries, k=6)
    assert set(fused.query_ids) == set(queries.ids) and all(len(fused[q]) == 6 for q in queries.ids)
    dense_run = dense.retrieve(queries, k=6)
    assert all(len(dense_run[q]) == 6 for q in queries.ids)


def test_model_mismatch_is_refused_unless_forced(toy_beir, tiny_bert_dir, tiny_bert_dir_b):
    first = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    second = load_encoder(tiny_bert_dir_b, pooling="mean", device="cpu")
    index = build_index(toy_beir, "flat", encoder=first, show_progress=False)
    with pytest.raises(ConfigError, match="scores would be meaningless"):
        DenseRetriever(second, index)
    DenseRetriever(second, index, force=True)
    minilm_like = load_encoder(tiny_bert_dir, pooling="mean", device="cpu", max_length=16)
    with pytest.raises(ConfigError, match="this index was built with model"):
        DenseRetriever(minilm_like, index)  # another max_length is another model configuration


def test_cli_index_build_and_search_round_trip(toy_beir, tiny_bert_dir, tmp_path):
    from retrievekit.cli.main import cli

    runner = CliRunner()
    for kind in ("flat", "hnsw", "bm25"):
        out = tmp_path / kind
        args = ["index", "build", "--corpus", str(toy_beir), "--type", kind, "--output", str(out)]
        if kind != "bm25":
            args += ["--model", str(tiny_bert_dir), "--pooling", "mean", "--device", "cpu"]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert len(load_index(out)) == 6
    result = runner.invoke(
        cli,
        ["search", "--index", str(tmp_path / "bm25"), "-q", "how do proteins fold", "-k", "2", "--json"],
        catch_exceptions=False,
    )
    line = json.loads(result.output.strip().splitlines()[0])
    assert line["results"][0] == {"id": "d1", "score": line["results"][0]["score"], "title": "Protein folding"}
    run_file = tmp_path / "run.trec"
    result = runner.invoke(
        cli,
        [
            "search",
            "--index",
            str(tmp_path / "flat"),
            "--model",
            str(tiny_bert_dir),  # outside the index: the caller names it; the index's pooling still applies
            "--queries",
            str(toy_beir / "queries.jsonl"),
            "-k",
            "3",
            "--output",
            str(run_file),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    run = read_trec_run(run_file)
    assert len(run) == 6 and all(len(run[q]) == 3 for q in run)
    assert run_file.read_text().splitlines()[0].split()[1:4:2] == ["Q0", "1"]
    # an index cannot choose a model outside itself: the error says what to pass
    from retrievekit.cli.main import main

    with pytest.raises(SystemExit) as stopped:
        main(["search", "--index", str(tmp_path / "hnsw"), "-q", "sleep and memory"])
    assert stopped.value.code == 2
    result = runner.invoke(
        cli, ["search", "--index", str(tmp_path / "hnsw"), "-m", str(tiny_bert_dir), "-q", "sleep"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0 and "1." in result.output
