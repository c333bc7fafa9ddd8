"""ColBERT models: PyLate's token layout and vectors, its folder layout, Stanford checkpoints.

The oracle for the vectors is PyLate's algorithm written out with plain transformers calls
(tokenise to length - 1, pad queries to length with [MASK], insert the marker after [CLS], project,
normalise, drop padding and punctuation from documents); where PyLate itself is installed (the
environment ``benchmarks/make_peer_env.sh`` builds), the vectors are compared with its own.
"""

from __future__ import annotations

import json
import shutil
import string
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import peer_python, run_peer
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.colbert import ColbertEncoder, build_colbert, load_colbert
from retrievekit.models.colbert_format import ColbertConfig
from retrievekit.models.registry import load_model
from retrievekit.outputs import MultiVectors

TEXTS = ["what is a cat?", "a cat is an animal, small. it purrs!", "", "dog " * 40, "the. , ?"]
CONFIG = ColbertConfig(query_length=12, document_length=20)


@pytest.fixture(scope="module")
def colbert(tiny_bert_dir) -> ColbertEncoder:
    return build_colbert(tiny_bert_dir, embedding_size=16, seed=3, config=CONFIG)


def reference_vectors(model: ColbertEncoder, texts: list[str], *, is_query: bool) -> list[np.ndarray]:
    """PyLate's ColBERT.encode, step by step, on the model's backbone and projection."""
    c, tokenizer, tower = model.config, model.tower.tokenizer, model.tower
    length = c.query_length if is_query else c.document_length
    prefix = c.query_prefix if is_query else c.document_prefix
    expand = is_query and c.do_query_expansion
    pad_id = tokenizer.mask_token_id
    out = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=length - 1)["input_ids"]
        mask = [1] * len(ids)
        if expand:
            mask += [0] * (length - 1 - len(ids))
            ids += [pad_id] * (length - 1 - len(ids))
        ids = [ids[0], tokenizer.convert_tokens_to_ids(prefix), *ids[1:]]
        mask = [1, 1, *mask[1:]]
        if is_query and c.attend_to_expansion_tokens:
            mask = [1] * len(mask)
        with torch.no_grad():
            hidden = tower.backbone(
                input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask])
            ).last_hidden_state[0]
            vectors = torch.nn.functional.normalize(tower.head.projection(hidden), dim=-1).numpy()
        if is_query:
            keep = np.ones(len(ids), bool) if expand else np.array(mask, bool)
        else:
            skip = {tokenizer.convert_tokens_to_ids(w) for w in c.skiplist_words}
            keep = np.array([i not in skip for i in ids])
        out.append(vectors[keep])
    return out


def assert_same(ours: MultiVectors, reference: list[np.ndarray], atol: float = 1e-5) -> None:
    assert len(ours) == len(reference)
    for row, expected in zip(ours, reference, strict=True):
        assert row.shape == expected.shape
        np.testing.assert_allclose(row, expected, atol=atol)


@pytest.mark.parametrize("is_query", [True, False])
def test_vectors_follow_pylates_algorithm(colbert, is_query):
    encode = colbert.encode_queries if is_query else colbert.encode_documents
    ours = encode(TEXTS, batch_size=2)
    assert isinstance(ours, MultiVectors)
    assert_same(ours, reference_vectors(colbert, TEXTS, is_query=is_query))
    if is_query:  # expansion: every query has query_length vectors
        assert set(ours.lengths.tolist()) == {CONFIG.query_length}
    else:  # punctuation dropped: "the. , ?" keeps [CLS] [D] the [SEP]
        assert ours.lengths[-1] == 4 and ours.dimension == 16
    single = encode(TEXTS[1])
    np.testing.assert_allclose(single, ours[1], atol=1e-6)


def test_expansion_settings_change_what_is_attended(tiny_bert_dir):
    attend = build_colbert(tiny_bert_dir, embedding_size=16, seed=3, config=ColbertConfig(
        query_length=12, document_length=20, attend_to_expansion_tokens=True))  # fmt: skip
    plain = build_colbert(tiny_bert_dir, embedding_size=16, seed=3, config=CONFIG)
    a, p = attend.encode_queries(TEXTS[:2]), plain.encode_queries(TEXTS[:2])
    assert_same(a, reference_vectors(attend, TEXTS[:2], is_query=True))
    assert not np.allclose(a.vectors, p.vectors, atol=1e-3)
    short = build_colbert(tiny_bert_dir, embedding_size=16, seed=3, config=ColbertConfig(
        query_length=12, document_length=20, do_query_expansion=False))  # fmt: skip
    vectors = short.encode_queries(TEXTS[:2])
    assert_same(vectors, reference_vectors(short, TEXTS[:2], is_query=True))
    assert vectors.lengths[0] < 12 and vectors.lengths[1] == 12  # no expansion: real tokens only


def test_build_is_seeded_and_adds_markers(tiny_bert_dir, colbert):
    again = build_colbert(tiny_bert_dir, embedding_size=16, seed=3, config=CONFIG)
    other = build_colbert(tiny_bert_dir, embedding_size=16, seed=4, config=CONFIG)
    assert again.fingerprint == colbert.fingerprint != other.fingerprint
    vocab = colbert.tower.tokenizer.get_vocab()
    assert "[Q] " in vocab and "[D] " in vocab
    assert colbert.tower.backbone.get_input_embeddings().weight.shape[0] == len(colbert.tower.tokenizer)


def test_save_writes_pylates_layout_and_reloads(colbert, tmp_path):
    folder = colbert.save(tmp_path / "colbert")
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer", "pylate.models.Dense.Dense"]
    st_config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st_config["similarity_fn_name"] == "MaxSim" and st_config["query_length"] == 12
    assert st_config["query_prefix"] == "[Q] " and st_config["skiplist_words"] == list(string.punctuation)
    dense = json.loads((folder / "1_Dense" / "config.json").read_text())
    assert dense == {"in_features": 32, "out_features": 16, "bias": False,
                     "activation_function": "torch.nn.modules.linear.Identity", "use_residual": False}  # fmt: skip
    loaded = load_model(folder)
    assert isinstance(loaded, ColbertEncoder) and loaded.fingerprint == colbert.fingerprint
    assert_same(loaded.encode_documents(TEXTS), list(colbert.encode_documents(TEXTS)), atol=1e-6)
    (folder / "manifest.json").unlink()  # as PyLate saves it: read from its own files
    as_pylate = load_model(folder)
    assert isinstance(as_pylate, ColbertEncoder) and as_pylate.fingerprint == colbert.fingerprint
    assert_same(as_pylate.encode_queries(TEXTS), list(colbert.encode_queries(TEXTS)), atol=1e-6)


def test_tampered_weights_are_refused(colbert, tmp_path):
    folder = colbert.save(tmp_path / "colbert")
    weights = folder / "1_Dense" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x3f")
    with pytest.raises(ArtifactError, match="changed since the model was saved"):
        load_colbert(folder)


def test_unsupported_projection_and_modules_are_one_line_errors(colbert, tmp_path):
    folder = colbert.save(tmp_path / "colbert")
    (folder / "manifest.json").unlink()
    config = json.loads((folder / "1_Dense" / "config.json").read_text())
    (folder / "1_Dense" / "config.json").write_text(json.dumps(config | {"activation_function": "torch.nn.Tanh"}))
    with pytest.raises(ArtifactError, match=r"activation 'torch\.nn\.Tanh' is not supported"):
        load_colbert(folder)
    (folder / "1_Dense" / "config.json").write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Pooling", "type": "sentence_transformers.models.Pooling"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ArtifactError, match="at most one Dense module"):
        load_colbert(folder)


def test_a_marker_missing_from_the_vocabulary_is_an_error(tiny_bert_dir, colbert, tmp_path):
    folder = colbert.save(tmp_path / "colbert")
    with pytest.raises(ConfigError, match="not a token of this model's tokenizer"):
        ColbertEncoder(colbert.tower, ColbertConfig(query_prefix="[nope]"), runners=[])
    assert folder.is_dir()


def test_lengths_are_capped_at_the_positions(tiny_bert_dir, caplog):
    model = build_colbert(tiny_bert_dir, embedding_size=8, config=ColbertConfig(query_length=32, document_length=180))
    assert "document_length=180 is more than the model's 64 positions" in caplog.text
    assert model.encode_documents(["dog " * 100]).lengths.tolist() == [64]


def _stanford_checkpoint(tiny_bert_dir: Path, folder: Path) -> Path:
    """A Stanford ColBERT folder: HF_ColBERT config, bert.* weights plus linear.weight, [unused0/1] markers."""
    from safetensors.torch import save_file
    from transformers import BertModel, BertTokenizerFast

    shutil.copytree(tiny_bert_dir, folder)
    (folder / "tokenizer.json").unlink(missing_ok=True)
    with (folder / "vocab.txt").open("a") as vocab:
        vocab.write("[unused0]\n[unused1]\n")
    words = (folder / "vocab.txt").read_text().splitlines()
    tokenizer = BertTokenizerFast(  # transformers 5 reads `vocab`, 4.x `vocab_file`
        vocab_file=str(folder / "vocab.txt"), vocab={w: i for i, w in enumerate(words)}, do_lower_case=True,
        model_max_length=64,
    )  # fmt: skip
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
    model = BertModel.from_pretrained(tiny_bert_dir)
    model.resize_token_embeddings(len(tokenizer))
    torch.manual_seed(1)
    state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["linear.weight"] = torch.randn(8, 32)
    for path in folder.glob("*.safetensors"):
        path.unlink()
    save_file(state, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["HF_ColBERT"],
                                                              "vocab_size": len(tokenizer)}))  # fmt: skip
    (folder / "artifact.metadata").write_text(json.dumps({"query_maxlen": 10, "doc_maxlen": 16,
                                                          "query_token_id": "[unused0]", "doc_token_id": "[unused1]",
                                                          "attend_to_mask_tokens": False, "dim": 8}))  # fmt: skip
    return folder


def test_stanford_checkpoints_load_with_their_markers_and_lengths(tiny_bert_dir, tmp_path):
    folder = _stanford_checkpoint(tiny_bert_dir, tmp_path / "stanford")
    model = load_model(folder)
    assert isinstance(model, ColbertEncoder)
    assert (model.config.query_prefix, model.config.query_length, model.config.document_length) == ("[unused0]", 10, 16)
    assert model.dimension == 8
    assert_same(model.encode_queries(TEXTS), reference_vectors(model, TEXTS, is_query=True))
    assert_same(model.encode_documents(TEXTS), reference_vectors(model, TEXTS, is_query=False))


def test_similarity_is_maxsim(colbert):
    q, d = colbert.encode_queries(TEXTS[:2]), colbert.encode_documents(TEXTS)
    scores = colbert.similarity(q, d)
    assert scores.shape == (2, len(TEXTS))
    expected = (q[0] @ d[1].T).max(axis=1).sum()
    assert scores[0, 1] == pytest.approx(expected, rel=1e-5)


PEER_SCRIPT = """
import sys, json, numpy as np
from pylate import models
model = models.ColBERT(sys.argv[1], device="cpu")
texts = json.loads(sys.argv[3])
out = {}
for name, is_query in (("q", True), ("d", False)):
    for i, row in enumerate(model.encode(texts, is_query=is_query, batch_size=2)):
        out[f"{name}{i}"] = np.asarray(row)
np.savez(sys.argv[2], **out)
"""


@pytest.mark.skipif(peer_python() is None, reason="PyLate's environment: run benchmarks/make_peer_env.sh")
def test_vectors_equal_pylates_own(colbert, tmp_path):
    folder = colbert.save(tmp_path / "colbert")
    result = tmp_path / "pylate.npz"
    run_peer(PEER_SCRIPT, str(folder), str(result), json.dumps(TEXTS))
    reference = np.load(result)
    assert_same(colbert.encode_queries(TEXTS), [reference[f"q{i}"] for i in range(len(TEXTS))])
    assert_same(colbert.encode_documents(TEXTS), [reference[f"d{i}"] for i in range(len(TEXTS))])
    assert sys.executable != peer_python()


def test_onnx_backend_gives_the_same_vectors(colbert, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = colbert.save(tmp_path / "colbert")
    exported = load_colbert(folder, backend="onnx", quantize=None)
    for side in ("queries", "documents"):
        ours, theirs = getattr(colbert, f"encode_{side}")(TEXTS), getattr(exported, f"encode_{side}")(TEXTS)
        assert_same(theirs, list(ours), atol=1e-5)
    int8 = load_colbert(folder, backend="onnx", quantize="int8").encode_documents(TEXTS)
    reference = colbert.encode_documents(TEXTS)
    assert (int8.lengths == reference.lengths).all()
    # per-token vectors of a tiny random model: no pooling averages the int8 error away, so the bound is on the
    # mean token (as the pooled dense vectors are) and, looser, on the worst one
    cosines = np.sum(int8.vectors * reference.vectors, axis=1)
    assert cosines.mean() > 0.98 and cosines.min() > 0.95, (cosines.mean(), cosines.min())
