"""SPLADE through the one trainer: the same data, losses and checkpoints, the sparse dot product as
score, plus FLOPS / L1 regularisers with SPLADE's quadratic warm-up and non-zeros logged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.test_training import TOPICS, _toy_rows
from tests.test_training import _config as dense_config

from retrievekit.errors import ConfigError
from retrievekit.models.sparse import SparseEncoder, load_sparse_encoder
from retrievekit.training import train
from retrievekit.training.curves import read_log

pytest.importorskip("lightning")


def _config(tmp_path, model, data, **overrides):
    values = {"kind": "sparse", "pooling": None, "normalize": None, "temperature": 1.0, "learning_rate": 2e-3}
    return dense_config(tmp_path, model, data, **(values | overrides))


def test_splade_trains_with_regularisers_and_reloads(tmp_path, tiny_mlm_dir):
    config = _config(tmp_path, tiny_mlm_dir, _toy_rows(tmp_path / "toy.jsonl"), document_regularizer_weight=1e-3,
                     query_regularizer="l1", query_regularizer_weight=5e-4, epochs=10)  # fmt: skip
    before = _accuracy(load_sparse_encoder(tiny_mlm_dir))
    result = train(config)
    log = read_log(tmp_path / "out" / "logs")
    ranking = [v for _, v in log["train/ranking_loss"]]
    assert result.steps == 20 and np.mean(ranking[-3:]) < 0.85 * np.mean(ranking[:3])
    documents = [v for _, v in log["train/document_nonzeros"]]
    assert all(v > 0 for v in documents) and "train/query_nonzeros" in log
    # the total is the ranking loss plus the warmed-up regularisers: above it once the warm-up starts
    total = dict(log["train/loss"])
    added = [total[s] - r for s, r in log["train/ranking_loss"]]
    assert abs(added[0]) < 1e-6 and min(added) > -1e-4 and added[-1] > 1e-5  # quadratic warm-up from 0
    model = load_sparse_encoder(result.model_dir)
    assert isinstance(model, SparseEncoder)
    manifest = json.loads((result.model_dir / "manifest.json").read_text())
    assert manifest["kind"] == "sparse_encoder" and manifest["fingerprint"] == model.fingerprint
    assert _accuracy(model) >= 0.75 > before


def _accuracy(model: SparseEncoder) -> float:
    q = model.encode_queries([f"what about {t}" for t in TOPICS])
    d = model.encode_documents([f"{t} {t} study" for t in TOPICS])
    return float((np.argmax(model.similarity(q, d), axis=1) == np.arange(len(TOPICS))).mean())


def test_regularisers_refuse_gradcache(tmp_path, tiny_mlm_dir):
    with pytest.raises(ConfigError, match="embeddings at once"):
        train(_config(tmp_path, tiny_mlm_dir, _toy_rows(tmp_path / "toy.jsonl"), loss="cached_infonce"))
