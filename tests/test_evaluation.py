from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retrievekit import load_encoder
from retrievekit.data import BeirDataset, Qrels, Run
from retrievekit.errors import ConfigError, DatasetNotFoundError
from retrievekit.evaluation import compute_metrics, evaluate, evaluate_dataset, remove_identical_ids, write_report
from retrievekit.index.build import build_index
from retrievekit.retrieval import Bm25Retriever

pytest.importorskip("pytrec_eval")


def test_metrics_match_hand_computation():
    # q1: relevant a (grade 1) and c (grade 2); ranking a, b, c, d.  q2: relevant x; ranking y, x.
    qrels = Qrels({"q1": {"a": 1, "c": 2}, "q2": {"x": 1}, "q3": {"z": 1}})
    run = Run({"q1": [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)], "q2": [("y", 2.0), ("x", 1.0)]})
    m = compute_metrics(qrels, run, k_values=[1, 3])
    # trec_eval's nDCG takes the grade itself as the gain; q3 was not retrieved at all and counts as 0
    dcg_q1, idcg_q1 = 1 / math.log2(2) + 2 / math.log2(4), 2 / math.log2(2) + 1 / math.log2(3)
    ndcg3 = [dcg_q1 / idcg_q1, 1 / math.log2(3), 0.0]
    assert m.aggregate["ndcg@3"] == pytest.approx(np.mean(ndcg3), abs=1e-6)
    assert m.aggregate["recall@1"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert m.aggregate["recall@3"] == pytest.approx((1 + 1 + 0) / 3)
    assert m.aggregate["mrr@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert m.aggregate["mrr@3"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m.aggregate["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert m.aggregate["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5 / 1 + 0) / 3)
    assert m.per_query["q3"]["ndcg@3"] == 0.0 and set(m.per_query) == {"q1", "q2", "q3"}
    with pytest.raises(ConfigError, match="unknown metric families"):
        compute_metrics(qrels, run, families=["bleu"])


def test_metrics_agree_with_ranx_on_a_random_run():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(3)
    docs = [f"d{i}" for i in range(60)]
    qrels = {f"q{q}": {d: int(rng.integers(1, 3)) for d in rng.choice(docs, size=4, replace=False)} for q in range(40)}
    run = {
        f"q{q}": {d: float(s) for d, s in zip(rng.choice(docs, size=30, replace=False), rng.random(30), strict=True)}
        for q in range(40)
    }
    ours = compute_metrics(Qrels(qrels), Run.from_scores(run), k_values=[5, 10])
    theirs = ranx.evaluate(
        ranx.Qrels(qrels), ranx.Run(run), ["ndcg@10", "recall@10", "mrr@10", "map@10", "precision@5"]
    )
    # ranx's ndcg uses the grade as gain too (jarvelin), like trec_eval
    for name in ("ndcg@10", "recall@10", "mrr@10", "map@10", "precision@5"):
        assert ours.aggregate[name] == pytest.approx(theirs[name], abs=1e-6), name


def test_ignore_identical_ids_removes_the_query_itself():
    run = Run({"q1": [("q1", 9.0), ("d1", 1.0)], "q2": [("d2", 1.0)]})
    kept, removed = remove_identical_ids(run)
    assert removed == 1 and [d.doc_id for d in kept["q1"]] == ["d1"]


def test_evaluate_any_retriever(toy_beir):
    split = BeirDataset(toy_beir).load("test")
    result = evaluate(Bm25Retriever(build_index(toy_beir, "bm25")), split, top_k=5, k_values=[1, 5])
    assert result.metrics.aggregate["recall@5"] == pytest.approx(1.0)  # each toy query names its document
    assert set(result.run.query_ids) == {"q1", "q2", "q3", "q4"}


@pytest.fixture
def tiny_encoder(tiny_bert_dir):
    return load_encoder(tiny_bert_dir, pooling="mean", device="cpu")


def test_dataset_evaluation_writes_every_output_and_caches(toy_beir, tiny_encoder, tmp_path, monkeypatch):
    cache = tmp_path / "evalcache"
    kwargs = {
        "systems": ["dense", "bm25", "hybrid"],
        "encoder": tiny_encoder,
        "top_k": 6,
        "k_values": [1, 3, 10],
        "cache_root": cache,
    }
    first = evaluate_dataset(toy_beir, **kwargs)
    assert [s.retriever for s in first.systems] == ["dense", "bm25", "hybrid"]
    assert first.num_queries == 4 and set(first.significance) == {"bm25", "hybrid"}
    assert first.settings["queries_without_judgements"] == 2  # q5 (train only) and q6 (no judgement)
    out = write_report(first, tmp_path / "report")
    record = json.loads((out / "results.json").read_text())
    assert {"dataset", "split", "retriever", "model", "metrics", "num_queries", "timing"} <= set(record)
    assert (
        record["retriever"] == "dense"
        and "ndcg@10" in record["metrics"]
        and set(record["timing"]) == {"encode", "index", "search"}
    )
    assert [r["retriever"] for r in record["systems"]] == ["dense", "bm25", "hybrid"]
    assert record["systems"][0]["metrics"] == record["metrics"]  # the first system also at the top level
    assert [r["model"] is None for r in record["systems"]] == [False, True, False]
    assert record["systems"][0]["significance"] is None and record["systems"][2]["significance"]["p_value"] >= 0
    lines = [json.loads(line) for line in (out / "per_query.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {"query_id", "retriever", "ndcg@10"} <= set(lines[0])
    assert (out / "results.md").read_text().count("\n| ") == 4  # header + three systems
    assert (out / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "dense" / "run.trec").read_text().splitlines()) == 4 * 6

    # the second evaluation encodes nothing: encoding would raise
    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(tiny_encoder, "encode_queries", no_encoding)
    monkeypatch.setattr(tiny_encoder, "encode_to_npy", no_encoding)
    second = evaluate_dataset(toy_beir, **kwargs)
    assert all(s.cached.get("run") for s in second.systems)
    assert second.systems[0].metrics.aggregate == first.systems[0].metrics.aggregate
    # a new top_k misses the run cache but reuses the corpus embeddings
    monkeypatch.undo()
    third = evaluate_dataset(toy_beir, **{**kwargs, "top_k": 5, "systems": ["dense"]})
    assert third.systems[0].cached == {"embeddings": True}


def test_identical_ids_are_removed_and_counted(toy_beir, tiny_encoder, tmp_path):
    (toy_beir / "corpus.jsonl").write_text(
        (toy_beir / "corpus.jsonl").read_text() + '{"_id": "q1", "text": "how do proteins fold"}\n'
    )
    result = evaluate_dataset(toy_beir, systems=["bm25"], top_k=7, k_values=[1], cache=False)
    assert result.systems[0].removed_identical == 1
    assert all(d.doc_id != "q1" for d in result.systems[0].run["q1"])
    kept = evaluate_dataset(toy_beir, systems=["bm25"], top_k=7, k_values=[1], cache=False, ignore_identical_ids=False)
    assert kept.systems[0].run["q1"][0].doc_id == "q1"
    assert result.systems[0].removed_relevant == 0  # q1 is not judged relevant for q1: nothing real lost


def test_removed_identical_ids_that_are_judged_relevant_are_reported(toy_beir, tmp_path):
    """Cranfield-style numbering: document "q1" is a real answer to query "q1"."""
    from click.testing import CliRunner

    from retrievekit.cli.main import cli

    (toy_beir / "corpus.jsonl").write_text(
        (toy_beir / "corpus.jsonl").read_text() + '{"_id": "q1", "text": "how proteins fold"}\n'
    )
    (toy_beir / "qrels" / "test.tsv").write_text((toy_beir / "qrels" / "test.tsv").read_text() + "q1\tq1\t1\n")
    result = evaluate_dataset(toy_beir, systems=["bm25"], top_k=7, k_values=[1], cache=False)
    assert result.systems[0].removed_identical == 1 and result.systems[0].removed_relevant == 1
    args = ["evaluate", "-d", str(toy_beir), "-r", "bm25", "--no-cache", "--top-k", "7", "-o", str(tmp_path / "o")]
    outcome = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "1 removed result(s) were judged relevant" in outcome.output and "--keep-identical-ids" in outcome.output
    record = json.loads((tmp_path / "o" / "results.json").read_text())
    assert record["ignore_identical_ids"] == {"enabled": True, "removed": 1, "removed_judged_relevant": 1}


def test_bad_evaluation_inputs(toy_beir, tiny_encoder):
    with pytest.raises(DatasetNotFoundError, match=r"has no split 'dev' \(available: test, train\)"):
        evaluate_dataset(toy_beir, systems=["bm25"], split="dev")
    with pytest.raises(ConfigError, match="needs a model"):
        evaluate_dataset(toy_beir, systems=["dense"])
    with pytest.raises(ConfigError, match="unknown retriever"):
        evaluate_dataset(toy_beir, systems=["splade-someday"])
    (toy_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tghost\t1\n")
    from retrievekit.errors import DataFormatError

    with pytest.raises(DataFormatError, match="name documents not in the corpus"):
        evaluate_dataset(toy_beir, systems=["bm25"])
    lenient = evaluate_dataset(toy_beir, systems=["bm25"], strict=False, cache=False, k_values=[10])
    assert lenient.systems[0].metrics.aggregate["recall@10"] == 0.0  # judged but unretrievable


def test_cli_evaluate_prints_the_table(toy_beir, tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli

    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--dataset",
            str(toy_beir),
            "--model",
            str(tiny_bert_dir),
            "--pooling",
            "mean",
            "--device",
            "cpu",
            "--retriever",
            "dense",
            "bm25",
            "--top-k",
            "6",
            "--k-values",
            "1",
            "10",
            "-o",
            str(tmp_path / "out"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output and "bm25" in result.output and "ignore_identical_ids: on" in result.output
    assert (tmp_path / "out" / "results.json").is_file()


def test_a_cached_run_scores_exactly_like_a_fresh_one(tmp_path):
    from retrievekit.data import read_trec_run, write_trec_run

    rng = np.random.default_rng(5)
    scores = {f"q{q}": {f"d{d}": float(np.float32(rng.random())) for d in range(50)} for q in range(20)}
    run = Run.from_scores(scores)
    back = read_trec_run(write_trec_run(run, tmp_path / "run.trec"))
    assert back.to_dict() == run.to_dict()


def test_retriever_option_takes_lists_commas_and_repeats(toy_beir):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli

    runner = CliRunner()
    for args in (["--retriever", "bm25"], ["-r", "bm25", "--k-values", "1,10"]):
        result = runner.invoke(
            cli, ["evaluate", "--dataset", str(toy_beir), *args, "--no-cache"], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["evaluate", "--dataset", str(toy_beir), "--retriever", "bm25", "splade"])
    assert result.exit_code == 2
    assert "'splade' is not one of dense, bm25, hybrid, colbert, colbert-hybrid" in result.output


def test_no_cache_reads_and_writes_nothing(toy_beir, tiny_encoder, tmp_path):
    result = evaluate_dataset(toy_beir, systems=["dense", "hybrid"], encoder=tiny_encoder, cache=False, top_k=6)
    assert result.systems[0].cached == {"embeddings": False}
    assert not (tmp_path / "cache").exists()  # RETRIEVEKIT_CACHE points here in tests


def test_run_cache_keys_on_the_system_fingerprint_not_its_name(toy_beir, tiny_bert_dir, tiny_bert_dir_b, tmp_path):
    options = {"systems": ["dense"], "top_k": 6, "k_values": [1, 3], "cache_root": tmp_path / "cache"}
    first = evaluate_dataset(toy_beir, encoder=load_encoder(tiny_bert_dir, pooling="mean", device="cpu"), **options)
    other_model = load_encoder(tiny_bert_dir_b, pooling="mean", device="cpu")
    second = evaluate_dataset(toy_beir, encoder=other_model, **options)
    assert not second.systems[0].cached.get("run") and second.systems[0].fingerprint != first.systems[0].fingerprint
    assert second.systems[0].run.to_dict() != first.systems[0].run.to_dict()
    assert evaluate_dataset(toy_beir, encoder=other_model, **options).systems[0].cached == {"run": True}
