"""The retrieval contracts with queries whose right answers differ per query and k below the corpus
size: dense, BM25 and hybrid retrievers, pipelines with a reranker, evaluation over objects and the
same runs from the Python API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retrievekit import load_encoder
from retrievekit.artifacts import fingerprint_json
from retrievekit.data import load_dataset, read_trec_run
from retrievekit.errors import ConfigError
from retrievekit.evaluation import (
    Bm25Spec,
    PipelineSpec,
    RetrieverSpec,
    evaluate,
    evaluate_dataset,
    register_retriever,
    registered_retrievers,
)
from retrievekit.evaluation.systems import _REGISTRY
from retrievekit.hits import Hits
from retrievekit.index import ExactIndex
from retrievekit.index.build import build_index
from retrievekit.retrieval import (
    Bm25Retriever,
    DenseReranker,
    DenseRetriever,
    HybridRetriever,
    Pipeline,
    Reranker,
    Retriever,
)

pytest.importorskip("bm25s")

DOCS = {
    "d1": "protein folding determines protein function",
    "d2": "t cells recognise antigens in the immune response",
    "d3": "sleep helps memory consolidation after learning",
    "d4": "coffee drinking and heart disease in cohorts",
    "d5": "antibiotics overuse drives resistance in bacteria",
}


class Listed(Retriever):
    """A retriever with fixed answers per query text (a stand-in first stage for fusion tests)."""

    def __init__(self, answers: dict[str, list[tuple[str, float]]], name: str) -> None:
        self.answers, self.name = answers, name

    @property
    def fingerprint(self) -> str:
        return fingerprint_json({"listed": self.answers})

    def _search(self, queries: list[str], k: int) -> list[Hits]:
        return [Hits.from_pairs(self.answers[q][:k]) for q in queries]


class ReverseReranker(Reranker):
    """Scores candidates by their position from the end: the reranked order is the reverse."""

    name = "reverse"

    @property
    def fingerprint(self) -> str:
        return "reverse"

    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]:
        return [Hits.from_pairs([(d, float(i)) for i, d in enumerate(h.ids)][::-1][:k]) for h in hits]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return load_encoder(tiny_bert_dir, pooling="mean", normalize=True, device="cpu")


def test_dense_retriever_answers_each_query_with_its_own_document(encoder):
    index = ExactIndex(encoder.dimension, model_fingerprint=encoder.fingerprint)
    index.add(list(DOCS), encoder.encode_documents(list(DOCS.values())))
    retriever = DenseRetriever(encoder, index)
    # each query is one document's text: its nearest document is itself, a different one per query
    hits = retriever.search(list(DOCS.values()), k=2)
    assert [h.ids[0] for h in hits] == list(DOCS)
    assert all(len(h) == 2 for h in hits)
    assert retriever.search([DOCS["d3"]], k=1)[0].ids == ["d3"]


def test_bm25_retriever_answers_each_query_with_its_own_document():
    index = build_bm25(DOCS)
    hits = Bm25Retriever(index).search(["protein folding", "immune antigens", "bacteria resistance"], k=2)
    assert [h.ids[0] for h in hits] == ["d1", "d2", "d5"]


def build_bm25(docs: dict[str, str]):
    from retrievekit.index.bm25 import Bm25Index

    index = Bm25Index()
    index.add(list(docs), list(docs.values()))
    return index


def test_hybrid_fuses_every_retriever_per_query_by_hand():
    first = Listed({"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("x", 1.0), ("y", 0.5)]}, "first")
    second = Listed({"q1": [("c", 9.0), ("d", 8.0), ("a", 7.0)], "q2": [("z", 4.0), ("x", 2.0)]}, "second")
    hybrid = HybridRetriever([first, second], depth=3)
    q1, q2 = hybrid.search(["q1", "q2"], k=3)
    # q1: a = 1/61 + 1/63, c = 1/63 + 1/61 (tie, broken by id), d = 1/62, b = 1/62
    assert q1.ids == ["a", "c", "b"]
    np.testing.assert_allclose(q1.scores, [1 / 61 + 1 / 63, 1 / 61 + 1 / 63, 1 / 62], rtol=1e-6)
    # q2: x = 1/61 + 1/62 beats z = 1/61 (only in the second list) and y = 1/62 (only in the first)
    assert q2.ids == ["x", "z", "y"]
    weighted = HybridRetriever([first, second], fusion="weighted", weights=[0.0, 1.0], depth=3)
    assert weighted.search(["q1"], k=2)[0].ids == ["c", "d"]  # all weight on the second retriever


def test_pipeline_reranks_the_fused_top_k_and_has_a_fingerprint():
    first = Listed({"q": [("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 0.5)]}, "first")
    pipeline = Pipeline([first], reranker=ReverseReranker(), rerank_top_k=3)
    assert pipeline.search(["q"], k=2)[0].ids == ["c", "b"]  # the top 3 reversed, then cut to 2
    deeper = pipeline.search(["q"], k=6)[0]  # past rerank_top_k, the first stage's order, scored below
    assert deeper.ids == ["c", "b", "a", "d"] and deeper.scores.tolist() == [2.0, 1.0, 0.0, -1.0]
    assert pipeline.name == "first>reverse"
    other = Pipeline([first], reranker=ReverseReranker(), rerank_top_k=2)
    assert pipeline.fingerprint != other.fingerprint
    with pytest.raises(ConfigError, match="needs a reranker"):
        Pipeline([first])
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        pipeline.search(["q"], k=0)
    with pytest.raises(TypeError, match="not a single string"):
        pipeline.search("q")


class Fixed(Reranker):
    """Scores candidates from a fixed table."""

    name = "fixed"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    @property
    def fingerprint(self) -> str:
        return fingerprint_json(self.scores)

    def _rerank(self, queries: list[str], hits: list[Hits], k: int) -> list[Hits]:
        return [Hits.from_pairs(sorted(((d, self.scores[d]) for d in h.ids), key=lambda p: -p[1])[:k]) for h in hits]


def test_rerank_fusion_fuses_the_reranked_order_with_the_first_stage_by_hand():
    first = Listed({"q": [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0), ("e", 0.5)]}, "first")
    table = {"a": 0.0, "b": 3.0, "c": 2.0, "d": 1.0}  # reranked: b c d a
    alone = Pipeline([first], reranker=Fixed(table), rerank_top_k=4)
    assert alone.search(["q"], k=4)[0].ids == ["b", "c", "d", "a"]
    rrf = Pipeline([first], reranker=Fixed(table), rerank_top_k=4, rerank_fusion="rrf")
    hits = rrf.search(["q"], k=3)[0]
    # a: 1/61 + 1/64, b: 1/62 + 1/61, c: 1/63 + 1/62, d: 1/64 + 1/63; e was never a candidate
    assert hits.ids == ["b", "a", "c"]
    np.testing.assert_allclose(hits.scores, [1 / 62 + 1 / 61, 1 / 61 + 1 / 64, 1 / 63 + 1 / 62], rtol=1e-6)
    assert rrf.name == "first>fixed+rrf" and rrf.fingerprint != alone.fingerprint
    weighted = Pipeline([first], reranker=Fixed(table), rerank_top_k=4, rerank_fusion="weighted",
                        rerank_weights=[1.0, 3.0])  # fmt: skip
    # min-max per list: first a 1, b 2/3, c 1/3, d 0; reranked a 0, b 1, c 2/3, d 1/3
    assert weighted.search(["q"], k=4)[0].ids == ["b", "c", "a", "d"]  # b 11/3, c 7/3, a 1 = d 1 (ties by id)
    with pytest.raises(ConfigError, match="unknown rerank fusion"):
        Pipeline([first], reranker=Fixed(table), rerank_fusion="max")
    with pytest.raises(ConfigError, match="2 weights"):
        Pipeline([first], reranker=Fixed(table), rerank_fusion="rrf", rerank_weights=[1.0])


def test_dense_reranker_reorders_candidates_by_the_model(encoder):
    reranker = DenseReranker(encoder, DOCS)
    wrong_order = Hits(["d1", "d2", "d3"], np.array([3.0, 2.0, 1.0], dtype=np.float32))
    reranked = reranker.rerank([DOCS["d3"], DOCS["d2"]], [wrong_order, wrong_order], k=2)
    assert [h.ids[0] for h in reranked] == ["d3", "d2"] and all(len(h) == 2 for h in reranked)
    expected = encoder.similarity(encoder.encode_query(DOCS["d3"]), encoder.encode_documents([DOCS["d3"]]))
    np.testing.assert_allclose(reranked[0].scores[0], expected[0, 0], rtol=1e-5)
    with pytest.raises(ConfigError, match="no text to rerank"):
        reranker.rerank(["q"], [Hits(["ghost"], np.ones(1))], k=1)


def test_retriever_fingerprints_follow_the_index_contents(encoder):
    index = ExactIndex(encoder.dimension, model_fingerprint=encoder.fingerprint)
    index.add(["d1", "d2"], encoder.encode_documents([DOCS["d1"], DOCS["d2"]]))
    retriever = DenseRetriever(encoder, index)
    before = retriever.fingerprint
    assert before == DenseRetriever(encoder, index).fingerprint
    index.remove(["d2"])
    assert retriever.fingerprint != before
    bm25 = Bm25Retriever(build_bm25(DOCS))
    assert bm25.fingerprint != Bm25Retriever(build_bm25(DOCS | {"d1": "something else"})).fingerprint


def test_evaluation_runs_objects_and_registered_specs_with_per_query_answers(toy_beir, encoder, tmp_path):
    split = load_dataset(toy_beir).load("test")
    bm25 = Bm25Retriever(build_index(toy_beir, "bm25"))
    result = evaluate(bm25, split, top_k=3, k_values=[1, 3])
    # the toy queries each have their own relevant document, and BM25 finds each first
    assert {q: result.run[q][0].doc_id for q in ("q1", "q2", "q3")} == {"q1": "d1", "q2": "d2", "q3": "d4"}
    assert all(len(result.run[q]) <= 3 for q in result.run)
    assert result.model is None and result.fingerprint == bm25.fingerprint
    # the same object through the caching runner: cached under its own fingerprint
    first = evaluate_dataset(toy_beir, systems=[bm25], top_k=3, k_values=[1, 3], cache_root=tmp_path / "c")
    again = evaluate_dataset(toy_beir, systems=[bm25], top_k=3, k_values=[1, 3], cache_root=tmp_path / "c")
    assert first.systems[0].run.to_dict() == result.run.to_dict() and again.systems[0].cached == {"run": True}
    # a spec object and the registered name agree
    by_name = evaluate_dataset(toy_beir, systems=["bm25"], top_k=3, k_values=[1, 3], cache=False)
    by_spec = evaluate_dataset(toy_beir, systems=[Bm25Spec()], top_k=3, k_values=[1, 3], cache=False)
    assert by_name.systems[0].run.to_dict() == by_spec.systems[0].run.to_dict() == result.run.to_dict()


def test_a_registered_retriever_needs_no_change_to_the_runner_or_cli(toy_beir, tmp_path):
    class WeightedSpec(PipelineSpec):
        pass

    def factory(options):
        return WeightedSpec([Bm25Spec(), Bm25Spec(params={"k1": 0.9}, name="bm25-k09")], name="two-bm25")

    register_retriever("two-bm25", factory, needs_model=False, description="two BM25 settings fused")
    try:
        assert "two-bm25" in registered_retrievers()
        result = evaluate_dataset(toy_beir, systems=["bm25", "two-bm25"], top_k=4, k_values=[1, 3], cache=False)
        assert [s.retriever for s in result.systems] == ["bm25", "two-bm25"]
        assert isinstance(WeightedSpec([Bm25Spec(), Bm25Spec()]), RetrieverSpec)
    finally:
        _REGISTRY.pop("two-bm25")


def test_python_api_and_cli_give_identical_hybrid_runs(toy_beir, tiny_bert_dir, tmp_path):
    from retrievekit.cli.main import cli

    args = ["evaluate", "--dataset", str(toy_beir), "--model", str(tiny_bert_dir), "--pooling", "mean"]
    args += ["--retriever", "hybrid", "--top-k", "4", "--k-values", "1", "3", "--no-cache", "-o", str(tmp_path / "o")]
    outcome = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    cli_run = read_trec_run(tmp_path / "o" / "hybrid" / "run.trec")
    encoder = load_encoder(tiny_bert_dir, pooling="mean")
    hybrid = HybridRetriever(
        [DenseRetriever(encoder, build_index(toy_beir, "flat", encoder=encoder, show_progress=False)),
         Bm25Retriever(build_index(toy_beir, "bm25"))],
    )  # fmt: skip
    api = evaluate(hybrid, load_dataset(toy_beir).load("test"), top_k=4, k_values=[1, 3])

    def flat(run):
        return [(q, d.doc_id, round(d.score, 5)) for q in sorted(run) for d in run[q]]

    assert flat(cli_run) == flat(api.run) and len(flat(api.run)) == 4 * 4
    record = json.loads((tmp_path / "o" / "results.json").read_text())
    assert record["metrics"] == pytest.approx(api.metrics.aggregate, abs=1e-4)
