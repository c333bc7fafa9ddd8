"""load_model dispatches on what a folder declares, through a registry a new family joins."""

from __future__ import annotations

import json

import pytest

from retrievekit import DenseEncoder, load_encoder, load_model
from retrievekit.errors import ArtifactError
from retrievekit.models.registry import _REGISTRY, detect_model_kind, model_kinds, register_model_kind


def test_load_model_reads_the_manifest_and_foreign_layouts(tiny_bert_dir, tmp_path):
    plain = load_model(tiny_bert_dir, pooling="mean")  # a Hugging Face folder: dense, pooling given
    assert (
        isinstance(plain, DenseEncoder) and plain.fingerprint == load_encoder(tiny_bert_dir, pooling="mean").fingerprint
    )
    saved = plain.save(tmp_path / "saved")
    assert detect_model_kind(saved) == "dense_encoder"
    again = load_model(saved)
    assert isinstance(again, DenseEncoder) and again.fingerprint == plain.fingerprint
    manifest = json.loads((saved / "manifest.json").read_text())
    (saved / "manifest.json").write_text(json.dumps(manifest | {"kind": "index"}))
    with pytest.raises(ArtifactError, match="not a model kind"):
        load_model(saved)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a model folder"):
        load_model(tmp_path / "empty")


def test_a_new_kind_registers_its_loader_and_layout(tmp_path):
    folder = tmp_path / "toy-model"
    folder.mkdir()
    (folder / "toy.json").write_text("{}")  # neither modules.json nor config.json: not a dense layout
    register_model_kind(
        "toy_kind", f"{__name__}:_load_toy", family="sparse", detect=lambda root: (root / "toy.json").is_file()
    )
    try:
        assert model_kinds()["toy_kind"] == "sparse"
        assert load_model(folder, answer=42) == ("toy", folder, 42)
    finally:
        _REGISTRY.pop("toy_kind")


def _load_toy(name_or_path, *, answer):
    return ("toy", name_or_path, answer)
