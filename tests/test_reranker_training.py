"""Cross-encoders through the one trainer: the same data readers, sampler, checkpoints and dev
evaluation; the collator pairs each query with its group (positive + negatives), the losses read
the pairs' logits (group softmax, binary cross-entropy, distillation)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tests.test_training import TOPICS, _CrashAt, _toy_rows, _weights
from tests.test_training import _config as dense_config

from retrievekit.errors import ConfigError
from retrievekit.models.cross_encoder import CrossEncoder, load_cross_encoder
from retrievekit.training import train
from retrievekit.training.curves import read_log

pytest.importorskip("lightning")


def _config(tmp_path: Path, model: Path, data: Path, **overrides):
    """The dense tests' settings, for a new cross-encoder built from ``model`` (a plain BERT folder)."""
    values = {"kind": "cross_encoder", "pooling": None, "normalize": None, "loss": "group_softmax"} | overrides
    return dense_config(tmp_path, model, data, **values)


def _losses(output: Path) -> list[float]:
    return [value for _, value in read_log(output / "logs")["train/loss"]]


def _separation(model: CrossEncoder) -> float:
    """How much more the toy task's positives score than its negatives, on average."""
    pairs = [(f"what about {t}", f"{t} {t} study") for t in TOPICS]
    negatives = [(f"what about {t}", f"{TOPICS[(i + 3) % len(TOPICS)]} {TOPICS[(i + 3) % len(TOPICS)]} study")
                 for i, t in enumerate(TOPICS)]  # fmt: skip
    return float(np.mean(model.predict(pairs) - model.predict(negatives)))


@pytest.mark.parametrize("loss", ["group_softmax", "bce"])
def test_a_reranker_learns_the_toy_task_and_loads_in_sentence_transformers(tmp_path, minilm_dir, loss):
    # MiniLM under a new one-label head, as the SciFact reranker starts (a tiny random BERT's [CLS]
    # barely depends on its input, so a pair classifier on it learns nothing in a test's few steps)
    config = _config(tmp_path, minilm_dir, _toy_rows(tmp_path / "toy.jsonl"), loss=loss, learning_rate=3e-4)
    result = train(config)
    losses = _losses(tmp_path / "out")
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4])
    model = load_cross_encoder(result.model_dir)
    assert isinstance(model, CrossEncoder) and model.num_labels == 1
    assert _separation(model) > 0.2  # positives now outscore negatives (sigmoid scores)
    from sentence_transformers import CrossEncoder as STCrossEncoder

    pairs = [("what about sleep", "sleep sleep study"), ("what about sleep", "heart heart study")]
    theirs = STCrossEncoder(str(result.model_dir), device="cpu").predict(pairs)
    np.testing.assert_allclose(model.predict(pairs), theirs, atol=1e-5)


def test_distillation_trains_a_reranker_and_bi_encoder_losses_are_refused(tmp_path, tiny_bert_dir):
    data = _toy_rows(tmp_path / "toy.jsonl", scores=True)
    for loss in ("margin_mse", "kl"):
        train(_config(tmp_path / loss, tiny_bert_dir, data, loss=loss, epochs=2))
        assert np.isfinite(_losses(tmp_path / loss / "out")).all()
    with pytest.raises(ConfigError, match="the infonce loss does not train a cross-encoder"):
        train(_config(tmp_path / "nce", tiny_bert_dir, data, loss="infonce"))
    with pytest.raises(ConfigError, match="group_softmax loss does not train a bi-encoder"):
        train(dense_config(tmp_path / "bi", tiny_bert_dir, data, loss="group_softmax"))


def test_reranker_training_resumes_exactly(tmp_path, tiny_bert_dir):
    data = _toy_rows(tmp_path / "toy.jsonl")
    straight = train(_config(tmp_path / "a", tiny_bert_dir, data, epochs=3, checkpoint_every=3))
    config = _config(tmp_path / "b", tiny_bert_dir, data, epochs=3, checkpoint_every=3)
    with pytest.raises(RuntimeError):
        train(config, callbacks=[_CrashAt(5).callback])
    resumed = train(config)
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert _losses(tmp_path / "a" / "out") == pytest.approx(_losses(tmp_path / "b" / "out"), abs=1e-6)


def test_dev_evaluation_reranks_the_first_stage(tmp_path, tiny_bert_dir, toy_beir):
    config = _config(tmp_path, tiny_bert_dir, _toy_rows(tmp_path / "toy.jsonl"), epochs=2, dev_dataset=str(toy_beir),
                     dev_split="test", rerank_top_k=3)  # fmt: skip
    result = train(config)
    with (tmp_path / "out" / "logs" / "metrics.csv").open() as handle:
        dev = [float(r["dev/ndcg@10"]) for r in csv.DictReader(handle) if r.get("dev/ndcg@10")]
    assert len(dev) == 2 and result.best_dev == max(dev)
    assert isinstance(load_cross_encoder(result.best_model_dir), CrossEncoder)
