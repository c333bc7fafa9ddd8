"""ColBERT end to end on the toy BEIR set: encode, index (flat and PLAID), search, rerank, hybrid,
evaluate, through the Python API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retrievekit.cli.main import cli
from retrievekit.data import BeirDataset
from retrievekit.evaluation import evaluate_dataset
from retrievekit.index.base import load_index
from retrievekit.index.build import build_index
from retrievekit.index.multivector import MultiVectorFlatIndex
from retrievekit.index.plaid import PlaidIndex
from retrievekit.models.colbert import build_colbert
from retrievekit.models.colbert_format import ColbertConfig
from retrievekit.outputs import MultiVectors
from retrievekit.retrieval import Bm25Retriever, Pipeline
from retrievekit.retrieval.retriever import MaxSimReranker, MultiVectorRetriever
from retrievekit.scoring import maxsim_ragged

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def colbert_dir(tiny_bert_dir, tmp_path_factory):
    config = ColbertConfig(query_length=12, document_length=48)
    model = build_colbert(tiny_bert_dir, embedding_size=16, seed=1, config=config)
    return model.save(tmp_path_factory.mktemp("colbert") / "model")


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_retriever_and_reranker_agree_with_exact_maxsim(colbert_dir, toy_beir):
    from retrievekit.models.colbert import load_colbert

    model = load_colbert(colbert_dir)
    split = BeirDataset(toy_beir).load("test")
    index = build_index(toy_beir, "multivector-flat", encoder=model, show_progress=False)
    retriever = MultiVectorRetriever(model, index)
    queries = split.queries.texts()
    hits = retriever.search(queries, k=5)
    documents = {d.id: d.full_text for d in split.corpus}
    doc_vectors = model.encode_documents(list(documents.values()))
    for query, result in zip(model.encode_queries(queries), hits, strict=True):
        exact = maxsim_ragged(query, list(doc_vectors))
        assert result.ids == [list(documents)[i] for i in np.argsort(-exact, kind="stable")[:5]]
    bm25 = Bm25Retriever(build_index(toy_beir, "bm25"))
    reranked = Pipeline([bm25], reranker=MaxSimReranker(model, documents), rerank_top_k=20).search(queries, 3)
    first = bm25.search(queries, 20)
    for query, result, candidates in zip(model.encode_queries(queries), reranked, first, strict=True):
        scores = maxsim_ragged(query, [doc_vectors[list(documents).index(d)] for d in candidates.ids])
        assert result.ids == [candidates.ids[i] for i in np.argsort(-scores, kind="stable")[:3]]
    hybrid = Pipeline([retriever, bm25], fusion="rrf").search(queries, 5)
    assert all(len(h) == 5 for h in hybrid)


def test_evaluate_colbert_writes_results_json(colbert_dir, toy_beir, tmp_path, monkeypatch):
    from retrievekit.models.colbert import load_colbert

    model = load_colbert(colbert_dir)
    flat = evaluate_dataset(toy_beir, systems=["colbert", "bm25", "colbert-hybrid"], encoder=model,
                            index_type="multivector-flat", cache_root=tmp_path / "cache")  # fmt: skip
    assert [s.retriever for s in flat.systems] == ["colbert", "bm25", "colbert-hybrid"]
    plaid = evaluate_dataset(toy_beir, systems=["colbert"], encoder=model, cache_root=tmp_path / "cache")
    assert plaid.settings["index_type"] is None and flat.systems[0].metrics.aggregate["ndcg@10"] > 0
    again = evaluate_dataset(toy_beir, systems=["colbert"], encoder=model, cache_root=tmp_path / "cache")
    assert again.systems[0].cached == {"run": True}
    # a change to the index's algorithm (its revision) invalidates the cached runs it made
    monkeypatch.setattr(PlaidIndex, "revision", PlaidIndex.revision + 1)
    changed = evaluate_dataset(toy_beir, systems=["colbert"], encoder=model, cache_root=tmp_path / "cache")
    assert not changed.systems[0].cached.get("run")
    assert plaid.systems[0].metrics.aggregate["ndcg@10"] == pytest.approx(
        flat.systems[0].metrics.aggregate["ndcg@10"], abs=0.05
    )
    out = tmp_path / "out"
    invoke("evaluate", "--dataset", str(toy_beir), "--retriever", "colbert", "--model", str(colbert_dir),
           "--index-type", "plaid", "--output", str(out), "--no-cache")  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["systems"][0]["retriever"] == "colbert" and "ndcg@10" in results["systems"][0]["metrics"]


def test_cli_encode_index_and_search(colbert_dir, toy_beir, tmp_path):
    info = invoke("model", "info", "--model", str(colbert_dir))
    assert "ColBERT" in info.output and "MaxSim" in info.output and "'[Q] '" in info.output
    invoke("encode", "--model", str(colbert_dir), "--input", str(toy_beir), "--output", str(tmp_path / "enc"))
    vectors = MultiVectors.load(tmp_path / "enc" / "vectors")
    ids = json.loads((tmp_path / "enc" / "ids.json").read_text())
    assert len(vectors) == len(ids) and vectors.dimension == 16
    for kind in ("multivector-flat", "plaid"):
        folder = tmp_path / kind
        invoke("index", "build", "--corpus", str(toy_beir), "--model", str(colbert_dir), "--type", kind,
               "--output", str(folder))  # fmt: skip
        index = load_index(folder)
        assert len(index) == len(ids) and index.index_type == kind
        result = invoke("search", "--index", str(folder), "--model", str(colbert_dir), "-q", "vitamin", "--json")
        hits = json.loads(result.output.strip().splitlines()[-1])["results"]
        assert len(hits) == len(ids)  # the toy corpus holds fewer than k=10
    flat = load_index(tmp_path / "multivector-flat")
    assert isinstance(flat, MultiVectorFlatIndex)
    refused = CliRunner().invoke(cli, ["search", "--index", str(tmp_path / "plaid"), "-q", "x"])
    assert refused.exit_code != 0 and "lies outside the index" in str(refused.exception)


def test_cli_document_length_override_is_recorded_and_reused(colbert_dir, toy_beir, tmp_path):
    folder = tmp_path / "short"
    invoke("index", "build", "--corpus", str(toy_beir), "--model", str(colbert_dir), "--type", "multivector-flat",
           "--document-length", "6", "--output", str(folder))  # fmt: skip
    index = load_index(folder)
    assert index.model_options["document_length"] == 6
    assert isinstance(index, MultiVectorFlatIndex) and int(np.diff(index.store.offsets).max()) <= 6
    # the search reloads the model with the recorded length, so the fingerprints agree
    result = invoke("search", "--index", str(folder), "--model", str(colbert_dir), "-q", "vitamin", "--json")
    assert json.loads(result.output.strip().splitlines()[-1])["results"]
    refused = CliRunner().invoke(cli, ["index", "build", "--corpus", str(toy_beir), "--type", "flat",
                                       "--document-length", "6", "--output", str(tmp_path / "dense")])  # fmt: skip
    assert refused.exit_code != 0 and "applies to ColBERT models" in str(refused.exception)
