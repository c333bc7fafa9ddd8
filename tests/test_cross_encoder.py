"""Cross-encoders: scores equal sentence-transformers' CrossEncoder.predict on the same folder (Hugging
Face sequence-classification folders, sentence-transformers saves, ours loaded back by it)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import build_tiny_bert, peer_python, run_peer
from retrievekit.errors import ArtifactError
from retrievekit.models.cross_encoder import CrossEncoder, load_cross_encoder
from retrievekit.models.registry import detect_model_kind, load_model

PAIRS = [
    ("what is a cat?", "a cat is a small animal"),
    ("vitamin d", "vitamin d and bone health in older women"),
    ("protein", "the immune response " * 30),  # longer than the 64 positions: truncated
    ("", "an empty query"),
    ("cells " * 70, "cells"),  # a long query: longest_first cuts the query
]


def build_cross_encoder(directory, *, labels: int = 1, seed: int = 4):
    """A random-init BERT sequence classifier with ``labels`` outputs (bge-reranker's folder layout)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    base = build_tiny_bert(directory.parent / f"{directory.name}-base", seed=seed)
    config = AutoConfig.from_pretrained(base)
    config.num_labels = labels
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory):
    return build_cross_encoder(tmp_path_factory.mktemp("ce") / "reranker")


def st_predict(folder, pairs, **options):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    return np.asarray(STCrossEncoder(str(folder), device="cpu").predict(pairs, **options))


def test_scores_equal_sentence_transformers_predict(ce_dir, caplog):
    assert detect_model_kind(ce_dir) == "cross_encoder"
    model = load_model(ce_dir, device="cpu")
    assert isinstance(model, CrossEncoder) and model.num_labels == 1 and model.config.activation == "sigmoid"
    with caplog.at_level(logging.WARNING):
        ours = model.predict(PAIRS, batch_size=2)  # several length-sorted batches, put back in order
    np.testing.assert_allclose(ours, st_predict(ce_dir, PAIRS), atol=1e-5)
    assert "2 of 5 pairs were longer than max_length=64" in caplog.text
    logits = model.compute_score(PAIRS)  # FlagEmbedding: raw logits, a sigmoid with normalize=True
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), ours, atol=1e-6)
    np.testing.assert_allclose(model.compute_score(PAIRS, normalize=True), ours, atol=1e-6)
    assert model.compute_score(PAIRS[0]).shape == (1,)  # one pair, as the peers accept it
    ranked = model.rank("vitamin d", [d for _, d in PAIRS], top_k=2)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]


def test_several_labels_and_a_shorter_max_length(tmp_path):
    folder = build_cross_encoder(tmp_path / "three", labels=3)
    model = load_cross_encoder(folder)
    assert model.config.activation == "identity"  # sentence-transformers' default for several labels
    np.testing.assert_allclose(model.predict(PAIRS), st_predict(folder, PAIRS), atol=1e-5)
    softmax = model.predict(PAIRS, activation="softmax")
    np.testing.assert_allclose(softmax, st_predict(folder, PAIRS, apply_softmax=True), atol=1e-5)
    short = load_cross_encoder(folder, max_length=16)
    assert short.max_length == 16 and short.fingerprint != model.fingerprint
    from sentence_transformers import CrossEncoder as STCrossEncoder

    st_short = STCrossEncoder(str(folder), device="cpu", max_length=16)
    np.testing.assert_allclose(short.predict(PAIRS), st_short.predict(PAIRS), atol=1e-5)


def test_save_loads_in_sentence_transformers_and_back(ce_dir, tmp_path):
    model = load_cross_encoder(ce_dir, activation="identity")
    saved = model.save(tmp_path / "saved")
    again = load_model(saved)
    assert isinstance(again, CrossEncoder) and again.fingerprint == model.fingerprint
    assert again.config.activation == "identity"
    np.testing.assert_allclose(st_predict(saved, PAIRS), model.predict(PAIRS), atol=1e-5)
    # a sentence-transformers save of the same model reads the same way
    from sentence_transformers import CrossEncoder as STCrossEncoder

    STCrossEncoder(str(ce_dir), device="cpu").save(str(tmp_path / "st"))
    np.testing.assert_allclose(load_cross_encoder(tmp_path / "st").predict(PAIRS), st_predict(ce_dir, PAIRS), atol=1e-5)


def test_a_folder_never_names_code_to_run(ce_dir, tmp_path):
    import shutil

    folder = tmp_path / "hostile"
    shutil.copytree(ce_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "os.system"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config\.json: activation 'os\.system' is not one retrievekit knows"):
        load_cross_encoder(folder)
    assert load_cross_encoder(folder, activation="sigmoid").config.activation == "sigmoid"  # the caller's word


def _read_run(path) -> dict[str, list[tuple[str, float]]]:
    ranked: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        query, _, doc, _rank, score, _name = line.split()
        ranked.setdefault(query, []).append((doc, float(score)))
    return ranked


def test_evaluate_reranks_each_first_stage_in_the_same_table(ce_dir, toy_beir, tmp_path):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli
    from retrievekit.data.beir import BeirDataset

    out = tmp_path / "eval"
    args = ["evaluate", "-d", str(toy_beir), "-r", "bm25", "--rerank", str(ce_dir), "--rerank-top-k", "3",
            "--k-values", "1", "3", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert [row["retriever"] for row in report["systems"]] == ["bm25", "bm25>rerank"]
    assert report["systems"][1]["significance"]["p_value"] is not None  # a paired t-test against the first stage
    split = BeirDataset(toy_beir).load("test")
    texts = dict(zip(split.corpus.ids, split.corpus.texts(), strict=True))
    queries = dict(zip(split.queries.ids, split.queries.texts(), strict=True))
    first, reranked = _read_run(out / "bm25" / "run.trec"), _read_run(out / "bm25>rerank" / "run.trec")
    model = load_cross_encoder(ce_dir)
    for query, ranking in reranked.items():
        candidates = [doc for doc, _ in first[query][:3]]
        assert sorted(doc for doc, _ in ranking) == sorted(candidates)  # the first stage's top 3, reordered
        scores = model.predict([(queries[query], texts[doc]) for doc in candidates])
        expected = sorted(zip(candidates, scores.tolist(), strict=True), key=lambda pair: -pair[1])
        assert [doc for doc, _ in ranking] == [doc for doc, _ in expected]
        np.testing.assert_allclose([s for _, s in ranking], [s for _, s in expected], atol=1e-5)


def test_rerank_fusion_rows_fuse_with_the_first_stage_and_score_each_pair_once(ce_dir, toy_beir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli
    from retrievekit.hits import Hits
    from retrievekit.retrieval.fusion import reciprocal_rank_fusion

    scored: list[int] = []
    original = CrossEncoder.predict

    def counting(self, pairs, **options):
        scored.append(len(pairs))
        return original(self, pairs, **options)

    monkeypatch.setattr(CrossEncoder, "predict", counting)
    out = tmp_path / "eval"
    args = ["evaluate", "-d", str(toy_beir), "-r", "bm25", "--rerank", str(ce_dir), "--rerank-top-k", "3",
            "--rerank-fusion", "none", "rrf", "--k-values", "1", "3", "--no-cache", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert [row["retriever"] for row in report["systems"]] == ["bm25", "bm25>rerank", "bm25>rerank+rrf"]
    first = _read_run(out / "bm25" / "run.trec")
    reranked, fused = _read_run(out / "bm25>rerank" / "run.trec"), _read_run(out / "bm25>rerank+rrf" / "run.trec")
    assert sum(scored) == sum(min(3, len(r)) for r in first.values())  # each pair once for both rows
    for query, ranking in fused.items():
        top = first[query][:3]
        lists = [Hits.from_pairs(top), Hits.from_pairs(reranked[query])]
        expected = reciprocal_rank_fusion(lists, k=3, rrf_k=60)
        assert [doc for doc, _ in ranking] == expected.ids
        np.testing.assert_allclose([s for _, s in ranking], expected.scores, rtol=1e-6)


def test_cli_rerank_ranks_documents_and_reranks_a_run(ce_dir, toy_beir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli
    from retrievekit.data.beir import BeirDataset

    def invoke(*args: str):
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    docs = tmp_path / "docs.txt"
    docs.write_text("a cat is a small animal\n\nvitamin d and bone health\nthe immune response\n")
    printed = invoke("rerank", "--model", str(ce_dir), "-q", "vitamin d", "--documents", str(docs), "-k", "2")
    model = load_cross_encoder(ce_dir)
    texts = ["a cat is a small animal", "vitamin d and bone health", "the immune response"]
    scores = model.predict([("vitamin d", t) for t in texts])
    best = int(np.argmax(scores))
    assert f"{scores[best]:.4f}" in printed and texts[best][:20] in printed  # blank lines are no documents
    split = BeirDataset(toy_beir).load("test")
    ids = split.corpus.ids
    run = tmp_path / "first.trec"
    run.write_text(
        "".join(f"{q} Q0 {d} {r + 1} {10 - r} first\n" for q in split.queries.ids for r, d in enumerate(ids[:4]))
    )
    out = tmp_path / "reranked.trec"
    invoke("rerank", "--model", str(ce_dir), "--queries", str(toy_beir / "queries.jsonl"), "--run", str(run),
           "--corpus", str(toy_beir), "--rerank-top-k", "3", "-k", "2", "-o", str(out))  # fmt: skip
    reranked = _read_run(out)
    texts_by_id = dict(zip(ids, split.corpus.texts(), strict=True))
    for query, text in zip(split.queries.ids, split.queries.texts(), strict=True):
        expected = model.predict([(text, texts_by_id[d]) for d in ids[:3]])
        order = np.argsort(-expected, kind="stable")[:2]
        assert [doc for doc, _ in reranked[query]] == [ids[i] for i in order]
    fused = tmp_path / "fused.trec"
    monkeypatch.setenv("RETRIEVEKIT_DATASETS", str(toy_beir.parent))  # --corpus by dataset name
    invoke("rerank", "--model", str(ce_dir), "--queries", str(toy_beir / "queries.jsonl"), "--run", str(run),
           "--corpus", toy_beir.name, "--rerank-top-k", "3", "--fusion", "rrf", "-k", "3",
           "-o", str(fused))  # fmt: skip
    for query, text in zip(split.queries.ids, split.queries.texts(), strict=True):
        expected = model.predict([(text, texts_by_id[d]) for d in ids[:3]])
        reranked_rank = {ids[i]: r for r, i in enumerate(np.argsort(-expected, kind="stable"), start=1)}
        rrf = {d: 1 / (60 + n) + 1 / (60 + reranked_rank[d]) for n, d in enumerate(ids[:3], start=1)}
        got = _read_run(fused)[query]
        assert [doc for doc, _ in got] == sorted(rrf, key=lambda d: (-rrf[d], d))
        np.testing.assert_allclose([s for _, s in got], sorted(rrf.values(), reverse=True), rtol=1e-6)


def test_onnx_backend_reads_the_pairs_segment_ids(ce_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    import shutil

    folder = tmp_path / "reranker"
    shutil.copytree(ce_dir, folder)
    reference = load_cross_encoder(folder).predict(PAIRS, batch_size=2)
    fp32 = load_cross_encoder(folder, backend="onnx", quantize=None)
    assert fp32.runtime == "onnx-fp32"
    np.testing.assert_allclose(fp32.predict(PAIRS, batch_size=2), reference, atol=1e-5)
    int8 = load_cross_encoder(folder, backend="onnx", quantize="int8").predict(PAIRS, batch_size=2)
    np.testing.assert_allclose(int8, reference, atol=1e-2)
    with pytest.raises(Exception, match="runs on the CPU"):
        load_cross_encoder(folder, backend="onnx", device="cuda")


def test_the_activation_runs_in_float32_after_a_bfloat16_model(ce_dir):
    from retrievekit.errors import ConfigError

    reference = load_cross_encoder(ce_dir).predict(PAIRS)
    half = load_cross_encoder(ce_dir, dtype="bfloat16")
    logits = half.compute_score(PAIRS)
    scores = half.predict(PAIRS)
    assert scores.dtype == np.float32 and half.runtime == "torch-bfloat16"
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)  # sigmoid in float32
    np.testing.assert_allclose(scores, reference, atol=2e-2)
    with pytest.raises(ConfigError, match="max_length 100 is more than the 64 positions"):
        load_cross_encoder(ce_dir, max_length=100)


PEER_SCRIPT = """
import json, sys
from sentence_transformers import CrossEncoder
print(json.dumps(CrossEncoder(sys.argv[1], device="cpu").predict(json.loads(sys.argv[3])).tolist()),
      file=open(sys.argv[2], "w"))
"""


@pytest.mark.skipif(
    peer_python() is None, reason="sentence-transformers 5's environment: run benchmarks/make_peer_env.sh"
)
def test_sentence_transformers_5_loads_our_save(ce_dir, tmp_path):
    saved = load_cross_encoder(ce_dir).save(tmp_path / "saved")
    result = tmp_path / "scores.json"
    run_peer(PEER_SCRIPT, str(saved), str(result), json.dumps(PAIRS))
    np.testing.assert_allclose(json.loads(result.read_text()), load_cross_encoder(saved).predict(PAIRS), atol=1e-5)


def test_a_cascade_orders_the_fast_rerankers_best_by_the_exact_one_and_keeps_the_rest_below(ce_dir, tmp_path):
    """CascadeReranker: ``fast`` orders every candidate, ``exact`` re-scores and orders the fast
    one's best ``top_k``; the tail keeps the fast order, every score below the head's."""
    from retrievekit.hits import Hits
    from retrievekit.retrieval import CascadeReranker, CrossEncoderReranker

    topics = ["cats", "vitamin d", "bone", "cells"]
    texts = {f"d{i}": f"document {i} about " + " ".join(topics[: 1 + i % 4]) * (1 + i % 3) for i in range(12)}
    queries = ["vitamin d and bone", "what is a cat"]
    fast_model = load_cross_encoder(ce_dir)
    exact_model = load_cross_encoder(build_cross_encoder(tmp_path / "other", seed=5))  # another model: orders differ
    fast = CrossEncoderReranker(fast_model, texts)
    exact = CrossEncoderReranker(exact_model, texts)
    candidates = [Hits(list(texts), np.zeros(len(texts), np.float32))] * 2
    cascade = CascadeReranker(fast, exact, top_k=4)
    got = cascade.rerank(queries, candidates, k=12)
    for query, hits in zip(queries, got, strict=True):
        fast_scores = fast_model.predict([(query, texts[d]) for d in texts])
        by_fast = [list(texts)[i] for i in np.argsort(-fast_scores, kind="stable")]
        exact_scores = dict(
            zip(by_fast[:4], exact_model.predict([(query, texts[d]) for d in by_fast[:4]]), strict=True)
        )
        head = sorted(by_fast[:4], key=lambda d: -exact_scores[d])
        assert hits.ids == head + by_fast[4:]
        np.testing.assert_allclose(hits.scores[:4], [exact_scores[d] for d in head], rtol=1e-6)
        assert (np.diff(hits.scores) <= 0).all() and hits.scores[4] < hits.scores[3]
    assert hits.ids != by_fast  # the exact model changed the head's order (else the test proves nothing)
    assert [len(h) for h in cascade.rerank(queries, candidates, k=3)] == [3, 3]
    assert cascade.fingerprint != CascadeReranker(fast, exact, top_k=5).fingerprint
    with pytest.raises(Exception, match="at least 1"):
        CascadeReranker(fast, exact, top_k=0)


def test_cli_rerank_rescores_the_int8_graphs_best_with_the_float32_graph(ce_dir, toy_beir, tmp_path):
    pytest.importorskip("onnxruntime")
    import shutil

    from click.testing import CliRunner

    from retrievekit.cli.main import cli
    from retrievekit.data.beir import BeirDataset

    folder = tmp_path / "reranker"
    shutil.copytree(ce_dir, folder)
    split = BeirDataset(toy_beir).load("test")
    ids = split.corpus.ids
    run = tmp_path / "first.trec"
    run.write_text(
        "".join(f"{q} Q0 {d} {r + 1} {10 - r} first\n" for q in split.queries.ids for r, d in enumerate(ids))
    )
    out = tmp_path / "cascade.trec"
    args = ["rerank", "--model", str(folder), "--queries", str(toy_beir / "queries.jsonl"), "--run", str(run),
            "--corpus", str(toy_beir), "--backend", "onnx", "--rescore-top-k", "2", "-k", "4",
            "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    int8 = load_cross_encoder(folder, backend="onnx", quantize="int8")
    fp32 = load_cross_encoder(folder)
    texts = dict(zip(ids, split.corpus.texts(), strict=True))
    for query, text in zip(split.queries.ids, split.queries.texts(), strict=True):
        fast = int8.predict([(text, texts[d]) for d in ids])
        by_fast = [ids[i] for i in np.argsort(-fast, kind="stable")]
        exact = dict(zip(by_fast[:2], fp32.predict([(text, texts[d]) for d in by_fast[:2]]), strict=True))
        got = _read_run(out)[query]
        assert [d for d, _ in got] == sorted(by_fast[:2], key=lambda d: -exact[d]) + by_fast[2:4]
        np.testing.assert_allclose([s for _, s in got[:2]], sorted(exact.values(), reverse=True), atol=1e-5)
    refused = CliRunner().invoke(cli, [*args[:-8], "--rescore-top-k", "2"])  # torch: refused
    assert refused.exit_code != 0 and "--backend onnx" in refused.output
