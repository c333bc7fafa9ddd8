from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from retrievekit import load_encoder
from retrievekit.errors import ConfigError
from retrievekit.models.modules.pooling import pool

TEXTS = [
    "how do proteins fold",
    "T cells recognise antigens and coordinate the adaptive immune response",
    "sleep",
    "Overuse of antibiotics drives resistance in bacteria, and resistance spreads quickly between hospitals",
]


def reference_vectors(model_dir, texts, pooling, normalize=False, prompt=""):
    """Plain transformers, one text at a time (no padding): the oracle for the tiny models."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            encoded = tokenizer(prompt + text, return_tensors="pt")
            hidden = model(**encoded).last_hidden_state[0]
            vector = {"cls": hidden[0], "mean": hidden.mean(0), "max": hidden.max(0).values, "last_token": hidden[-1]}[
                pooling
            ]
            rows.append(torch.nn.functional.normalize(vector, dim=0) if normalize else vector)
    return torch.stack(rows).numpy()


@pytest.mark.parametrize("mode", ["cls", "mean", "max", "last_token"])
def test_pooling_matches_unpadded_reference(tiny_bert_dir, mode):
    encoder = load_encoder(tiny_bert_dir, pooling=mode, device="cpu")
    got = encoder.encode_documents(TEXTS, batch_size=3)  # mixed lengths: padding inside batches
    np.testing.assert_allclose(got, reference_vectors(tiny_bert_dir, TEXTS, mode), atol=1e-5)
    assert got.dtype == np.float32 and got.shape == (4, 32)


def test_last_token_pooling_with_left_padding():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3).repeat(2, 1, 1)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert pool(hidden, mask, "last_token").tolist() == [[9.0, 10.0, 11.0], [6.0, 7.0, 8.0]]
    with pytest.raises(ValueError, match="unknown pooling mode 'sum'"):
        pool(hidden, mask, "sum")


def test_plain_hf_folder_needs_explicit_pooling(tiny_bert_dir):
    with pytest.raises(ConfigError, match="say how to pool its tokens with pooling="):
        load_encoder(tiny_bert_dir)


def test_prompts_and_normalisation(tiny_bert_dir):
    prompt = "Represent this sentence for searching relevant passages: "
    encoder = load_encoder(tiny_bert_dir, pooling="cls", normalize=True, query_prompt=prompt, device="cpu")
    queries = encoder.encode_queries(TEXTS[:2])
    documents = encoder.encode_documents(TEXTS[:2])
    np.testing.assert_allclose(queries, reference_vectors(tiny_bert_dir, TEXTS[:2], "cls", True, prompt), atol=1e-5)
    np.testing.assert_allclose(documents, reference_vectors(tiny_bert_dir, TEXTS[:2], "cls", True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)


def test_results_come_back_in_input_order_across_chunks_and_budgets(tiny_bert_dir):
    encoder = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    texts = [TEXTS[i % 4] + " word" * (i % 7) for i in range(40)]
    one_by_one = np.concatenate([encoder.encode_documents([t]) for t in texts])
    np.testing.assert_allclose(encoder.encode_documents(texts, batch_size=8, max_tokens=64), one_by_one, atol=1e-5)


def test_bad_inputs(tiny_bert_dir, caplog):
    encoder = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    with pytest.raises(TypeError, match="text at position 1 is NoneType"):
        encoder.encode_documents(["fine", None])
    with pytest.raises(TypeError, match="text at position 0 is int"):
        encoder.encode_queries([3])
    assert encoder.encode_queries("one string").shape == (32,)  # a single string: one 1-d vector
    with caplog.at_level(logging.WARNING):
        out = encoder.encode_documents(["", "x", "", "word " * 200])
    assert out.shape == (4, 32) and np.isfinite(out).all()
    assert "2 of 4 texts were empty strings" in caplog.text
    assert "1 of 4 texts were longer than max_length=64 tokens and were truncated" in caplog.text
    assert encoder.encode_documents([]).shape == (0, 32)


def test_one_pass_tokenization_matches_the_tokenizer_and_leaves_it_as_it_was(tiny_bert_dir):
    from transformers import AutoTokenizer

    from retrievekit.models.encoding import tokenize_chunk

    tokenizer, reference = AutoTokenizer.from_pretrained(tiny_bert_dir), AutoTokenizer.from_pretrained(tiny_bert_dir)
    engine = tokenizer.backend_tokenizer
    engine.enable_padding(length=40)  # state some other caller left behind: not ours to use or change
    engine.enable_truncation(max_length=50)
    before = engine.padding, engine.truncation
    texts = ["word " * 30, "", "sleep helps memory", "Coffee " * 7, "word " * 6]
    full = [len(ids) for ids in reference(texts)["input_ids"]]
    for max_length in (8, 64, 512):
        chunk = tokenize_chunk(tokenizer, texts, max_length)
        assert chunk.input_ids == reference(texts, truncation=True, max_length=max_length)["input_ids"]
        assert chunk.truncated == sum(n > max_length for n in full)
    assert tokenize_chunk(tokenizer, texts, 8).truncated >= 2 and max(full) < 512

    class WithoutEngine:  # tokenizers without a fast engine take the two-call path, with the same result
        def __call__(self, *args, **kwargs):
            return reference(*args, **kwargs)

    assert tokenize_chunk(WithoutEngine(), texts, 8) == tokenize_chunk(tokenizer, texts, 8)
    assert (engine.padding, engine.truncation) == before
    tokenizer.add_tokens(["sleephelps"])  # a token added later is used, not a stale copy's vocabulary
    reference.add_tokens(["sleephelps"])
    grown = ["sleephelps twice sleephelps"]
    assert tokenize_chunk(tokenizer, grown, 64).input_ids == reference(grown)["input_ids"]


def test_truncate_dim_and_precisions(tiny_bert_dir):
    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True, device="cpu")
    full = encoder.encode_documents(TEXTS)
    short = encoder.encode_documents(TEXTS, truncate_dim=8)
    assert short.shape == (4, 8)
    np.testing.assert_allclose(short, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    assert encoder.encode_documents(TEXTS, precision="float16").dtype == np.float16
    with pytest.raises(ConfigError, match="calibration"):  # never ranges fitted on the texts at hand
        encoder.encode_documents(TEXTS, precision="int8")
    encoder.calibrate(TEXTS)
    codes = encoder.encode_documents(TEXTS, precision="int8")
    assert codes.dtype == np.int8 and codes.min() == -128 and codes.max() == 127
    bits = encoder.encode_documents(TEXTS, precision="ubinary")
    assert bits.shape == (4, 4) and bits.dtype == np.uint8
    np.testing.assert_array_equal(np.unpackbits(bits, axis=1), (full > 0).astype(np.uint8))
    signed = encoder.encode_documents(TEXTS, precision="binary")
    np.testing.assert_array_equal(signed.astype(np.int16) + 128, bits)
    with pytest.raises(ConfigError, match="truncate_dim must be between 1 and 32"):
        encoder.encode_documents(TEXTS, truncate_dim=64)


def test_streaming_to_npy_with_bounded_chunks(tiny_bert_dir, tmp_path):
    encoder = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    texts = [f"{TEXTS[i % 4]} {i}" for i in range(50)]
    result = encoder.encode_to_npy(iter(texts), tmp_path / "e.npy", side="documents", chunk_size=16, batch_size=4)
    assert (result.count, result.dimension) == (50, 32)
    stored = np.load(tmp_path / "e.npy", mmap_mode="r")
    np.testing.assert_allclose(stored, encoder.encode_documents(texts), atol=1e-5)


def test_several_devices_give_the_same_vectors(tiny_bert_dir):
    single = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    double = load_encoder(tiny_bert_dir, pooling="mean", device=["cpu", "cpu"])
    np.testing.assert_allclose(
        double.encode_documents(TEXTS * 5, batch_size=2), single.encode_documents(TEXTS * 5), atol=1e-5
    )
    with pytest.raises(ConfigError, match="float16 is for GPUs"):
        load_encoder(tiny_bert_dir, pooling="mean", device="cpu", dtype="float16")


def test_save_load_round_trip_and_sentence_transformers(tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(
        tiny_bert_dir, pooling="cls", normalize=True, query_prompt="query: ", document_prompt="passage: ", device="cpu"
    )
    saved = encoder.save(tmp_path / "saved")
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["kind"] == "dense_encoder" and manifest["fingerprint"] == encoder.fingerprint
    reloaded = load_encoder(saved, device="cpu")
    assert reloaded.fingerprint == encoder.fingerprint
    assert reloaded.spec.query_prompt == "query: " and reloaded.spec.document.pooling == "cls"
    np.testing.assert_allclose(reloaded.encode_queries(TEXTS), encoder.encode_queries(TEXTS), atol=1e-6)
    st = SentenceTransformer(str(saved), device="cpu")
    np.testing.assert_allclose(st.encode_query(TEXTS), encoder.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(TEXTS), encoder.encode_documents(TEXTS), atol=1e-5)


def test_two_towers_save_load_and_sentence_transformers(tiny_bert_dir, tiny_bert_dir_b, tmp_path):
    from dataclasses import replace

    from sentence_transformers import SentenceTransformer

    from retrievekit.models.dense import DenseEncoder

    query_side = load_encoder(tiny_bert_dir, pooling="cls", device="cpu")
    document_side = load_encoder(tiny_bert_dir_b, pooling="cls", device="cpu")
    spec = replace(query_side.spec, shared=False, document=document_side.spec.document)
    two = DenseEncoder(spec, query_side.query_tower, document_side.document_tower, runners={}).with_devices(
        [torch.device("cpu")]
    )
    np.testing.assert_allclose(two.encode_queries(TEXTS), query_side.encode_queries(TEXTS), atol=1e-6)
    np.testing.assert_allclose(two.encode_documents(TEXTS), document_side.encode_documents(TEXTS), atol=1e-6)
    saved = two.save(tmp_path / "two")
    reloaded = load_encoder(saved, device="cpu")
    assert not reloaded.spec.shared and reloaded.fingerprint == two.fingerprint
    np.testing.assert_allclose(reloaded.encode_queries(TEXTS), two.encode_queries(TEXTS), atol=1e-6)
    np.testing.assert_allclose(reloaded.encode_documents(TEXTS), two.encode_documents(TEXTS), atol=1e-6)
    st = SentenceTransformer(str(saved), device="cpu")
    np.testing.assert_allclose(st.encode_query(TEXTS), two.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(TEXTS), two.encode_documents(TEXTS), atol=1e-5)


def test_sentence_transformers_dense_layer_is_loaded(tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    modules = [
        models.Transformer(str(tiny_bert_dir)),
        models.Pooling(32, "max"),
        models.Dense(32, 16, activation_function=torch.nn.Tanh()),
        models.Normalize(),
    ]
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(str(tmp_path / "st"))
    encoder = load_encoder(tmp_path / "st", device="cpu")
    assert encoder.dimension == 16 and encoder.spec.document.pooling == "max"
    np.testing.assert_allclose(encoder.encode_documents(TEXTS), st.encode(TEXTS), atol=1e-5)


def test_pickle_weights_are_refused(tiny_bert_dir, tmp_path):
    import shutil

    from retrievekit.errors import ArtifactError

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pretend pickle")
    with pytest.raises(ArtifactError, match=r"never unpickles pytorch_model.bin"):
        load_encoder(folder, pooling="mean")


def test_minilm_matches_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu")
    texts = [*TEXTS, "", "word " * 400]
    ours = minilm.encode_documents(texts, batch_size=4)
    assert np.abs(ours - st.encode(texts, batch_size=4)).max() < 1e-5
    assert minilm.dimension == 384 and minilm.max_length == 256 and minilm.normalizes


def test_sentence_transformers_habits(tiny_bert_dir, tmp_path):
    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True, device="cpu")
    query = encoder.encode_query("how do proteins fold")
    documents = encoder.encode_document(TEXTS)
    assert query.shape == (32,) and documents.shape == (4, 32)
    np.testing.assert_allclose(encoder.encode_queries(["how do proteins fold"])[0], query, atol=1e-6)
    scores = encoder.similarity(query, documents)
    assert scores.shape == (1, 4)
    np.testing.assert_allclose(scores[0], documents @ query, atol=1e-5)  # cosine of unit vectors
    assert encoder.similarity_fn_name == "cosine"
    # int8 codes of a single text use the stored ranges, the same for queries and documents
    encoder.calibrate(TEXTS * 3)
    one = encoder.encode_documents(["some text"], precision="int8")
    assert one.shape == (1, 32) and len(np.unique(one)) > 2  # not all -128, as ranges fitted on one text gave
    np.testing.assert_array_equal(
        encoder.encode_queries([TEXTS[0]], precision="int8"), encoder.encode_documents([TEXTS[0]], precision="int8")
    )
    saved = load_encoder(encoder.save(tmp_path / "calibrated"), device="cpu")
    assert saved.calibration is not None
    np.testing.assert_array_equal(saved.calibration.ranges, encoder.calibration.ranges)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precisions_equal_sentence_transformers(precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    from retrievekit.quantization import Int8Calibration, quantize

    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(200, 16)).astype(np.float32)
    queries = rng.normal(size=(5, 16)).astype(np.float32) * 1.5  # some values beyond the ranges
    calibration = Int8Calibration.fit(corpus)
    expected = quantize_embeddings(queries, precision=precision, ranges=calibration.ranges)
    ours = quantize(queries, precision, calibration)
    assert ours.dtype == expected.dtype
    np.testing.assert_array_equal(ours, expected)
