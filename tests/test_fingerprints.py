"""Fingerprints are computed, not trusted: changed weights or tokenizer files are caught at load, and
caches keyed on fingerprints never serve results of another model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from retrievekit import load_encoder
from retrievekit.errors import ArtifactError
from retrievekit.evaluation import evaluate_dataset


def _zero_a_layer(folder):
    weights = next(folder.rglob("model.safetensors"))
    tensors = load_file(weights)
    name = next(k for k in sorted(tensors) if "encoder.layer.0" in k and k.endswith("weight"))
    tensors[name] = np.zeros_like(tensors[name])
    save_file(tensors, weights)


def test_a_saved_model_whose_weights_changed_is_refused(tiny_bert_dir, tmp_path):
    saved = load_encoder(tiny_bert_dir, pooling="mean", device="cpu").save(tmp_path / "saved")
    assert "files_digest" in json.loads((saved / "manifest.json").read_text())["config"]
    load_encoder(saved)  # verified: loads
    _zero_a_layer(saved)
    with pytest.raises(ArtifactError, match="changed since the model was saved"):
        load_encoder(saved)


def test_a_changed_tokenizer_is_refused_and_a_missing_one_is_an_error(tiny_bert_dir, tmp_path):
    saved = load_encoder(tiny_bert_dir, pooling="mean", device="cpu").save(tmp_path / "saved")
    vocab = saved / "tokenizer.json"
    vocab.write_text(vocab.read_text().replace('"protein"', '"proteen"'))
    with pytest.raises(ArtifactError, match="changed since the model was saved"):
        load_encoder(saved)
    plain = tmp_path / "plain"
    shutil.copytree(tiny_bert_dir, plain)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (plain / name).unlink(missing_ok=True)
    with pytest.raises(ArtifactError, match="no tokenizer files"):
        load_encoder(plain, pooling="mean")


def test_fingerprints_follow_weights_and_tokenizer_of_plain_folders(tiny_bert_dir, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_bert_dir, plain)
    before = load_encoder(plain, pooling="mean", device="cpu").fingerprint
    _zero_a_layer(plain)
    after_weights = load_encoder(plain, pooling="mean", device="cpu").fingerprint
    assert after_weights != before
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config["do_lower_case"] = not config.get("do_lower_case", True)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_encoder(plain, pooling="mean", device="cpu").fingerprint != after_weights


def test_the_evaluation_cache_misses_after_a_weight_change(toy_beir, tiny_bert_dir, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_bert_dir, plain)
    options = {"systems": ["dense"], "top_k": 6, "k_values": [1, 3], "cache_root": tmp_path / "cache"}
    first = evaluate_dataset(toy_beir, encoder=load_encoder(plain, pooling="mean", device="cpu"), **options)
    assert not first.systems[0].cached.get("run")
    _zero_a_layer(plain)
    second = evaluate_dataset(toy_beir, encoder=load_encoder(plain, pooling="mean", device="cpu"), **options)
    assert second.systems[0].cached == {"embeddings": False}  # neither the run nor the vectors were reused


def test_verification_is_cached_by_size_and_mtime(tiny_bert_dir, tmp_path, monkeypatch):
    from retrievekit import artifacts

    saved = load_encoder(tiny_bert_dir, pooling="mean", device="cpu").save(tmp_path / "saved")
    load_encoder(saved)
    opened: list[str] = []
    original = artifacts._file_sha256

    def counting(path, cache):
        if str(path.resolve()) not in cache:
            opened.append(path.name)
        return original(path, cache)

    monkeypatch.setattr(artifacts, "_file_sha256", counting)
    load_encoder(saved)
    assert opened == []  # every file's hash came from the cache


def test_tokenizer_digest_ignores_the_truncation_a_caller_set(tiny_bert_dir):
    from transformers import AutoTokenizer

    from retrievekit.models.tower import tokenizer_digest

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    before = tokenizer_digest(tokenizer)
    tokenizer(["a cat"], truncation=True, max_length=5, padding="max_length")
    assert tokenizer_digest(tokenizer) == before
    tokenizer.add_tokens(["[Q] "])
    assert tokenizer_digest(tokenizer) != before


def test_a_model_keeps_its_fingerprint_through_save_load_and_its_own_prompts(tiny_bert_dir, tmp_path):
    """The fingerprint a save records is the one the loaded model computes, and reloading with the
    prompts the folder already has (what an index records) changes nothing: search finds its index."""
    built = load_encoder(tiny_bert_dir, pooling="mean", query_prompt="query: ", device="cpu")
    saved = built.save(tmp_path / "saved")
    loaded = load_encoder(saved)
    recorded = loaded.fingerprint
    loaded._fingerprint = None  # computed afresh from the loaded towers and spec
    assert loaded.fingerprint == recorded == built.fingerprint
    assert load_encoder(saved, query_prompt="query: ", document_prompt="").fingerprint == recorded
    assert load_encoder(saved, query_prompt="other: ").fingerprint != recorded
