"""ColBERT through the one trainer: the same data readers, losses and checkpoints; only the
collator (ColBERT's token layout) and the score function (MaxSim) differ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.test_training import TOPICS, _CrashAt, _toy_rows, _weights
from tests.test_training import _config as dense_config

from retrievekit.models.colbert import ColbertEncoder, load_colbert
from retrievekit.scoring import maxsim, similarity_matrix
from retrievekit.training import load_config, train
from retrievekit.training.curves import read_log

pytest.importorskip("lightning")


def _config(tmp_path: Path, model: Path, data: Path, **overrides):
    """The dense tests' settings, for a new 16-d ColBERT built from ``model``."""
    values = {"kind": "colbert", "embedding_size": 16, "pooling": None, "normalize": None} | overrides
    return dense_config(tmp_path, model, data, **values)


def _losses(output: Path) -> list[float]:
    return [value for _, value in read_log(output / "logs")["train/loss"]]


def test_padded_maxsim_ignores_zeroed_tokens():
    q = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]]])
    d = torch.tensor([[[-0.6, -0.8, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]]])  # d0: 1 token
    expected = maxsim(q, d, document_mask=(d != 0).any(-1))
    assert torch.allclose(similarity_matrix(q, d, "maxsim"), expected)
    assert expected[0, 0] < maxsim(q, d)[0, 0]  # unmasked, the zero row would beat the negative scores
    pairs = similarity_matrix(q, d, "maxsim").diagonal()
    from retrievekit.scoring import pairwise_scores

    assert torch.allclose(pairwise_scores(q, d, "maxsim"), pairs)


def test_colbert_trains_from_a_dense_encoder_and_reloads(tmp_path, tiny_bert_dir):
    result = train(_config(tmp_path, tiny_bert_dir, _toy_rows(tmp_path / "toy.jsonl")))
    losses = _losses(tmp_path / "out")
    assert result.steps == 12 and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    model = load_colbert(result.model_dir)
    assert isinstance(model, ColbertEncoder) and model.dimension == 16
    manifest = json.loads((result.model_dir / "manifest.json").read_text())
    assert manifest["kind"] == "colbert_encoder" and manifest["fingerprint"] == model.fingerprint
    q = model.encode_queries([f"what about {t}" for t in TOPICS])
    d = model.encode_documents([f"{t} {t} study" for t in TOPICS])
    assert (np.argmax(model.similarity(q, d), axis=1) == np.arange(len(TOPICS))).mean() >= 0.75
    # distillation (KL on teacher scores, as PyLate's Distillation) and GradCache run on MaxSim too
    scored = _toy_rows(tmp_path / "scored.jsonl", scores=True)
    kl = train(_config(tmp_path / "kl", result.model_dir, scored, kind="auto", loss="kl", epochs=2))
    assert kl.steps == 4 and np.isfinite(_losses(tmp_path / "kl" / "out")).all()
    cached = train(_config(tmp_path / "cached", tiny_bert_dir, scored, loss="cached_infonce", mini_batch_size=3,
                           epochs=2))  # fmt: skip
    assert cached.steps == 4 and np.isfinite(_losses(tmp_path / "cached" / "out")).all()


def test_cached_infonce_gives_the_plain_maxsim_gradients(tiny_bert_dir):
    from retrievekit.models.colbert import build_colbert
    from retrievekit.models.colbert_format import ColbertConfig
    from retrievekit.training.batches import TrainingSet
    from retrievekit.training.data import TrainingExample
    from retrievekit.training.losses import CachedInfoNCELoss, InfoNCELoss
    from retrievekit.training.model import BiEncoderModel
    from retrievekit.training.trainer import _collator

    encoder = build_colbert(tiny_bert_dir, embedding_size=8, config=ColbertConfig(query_length=10, document_length=24))
    collate = _collator(encoder, load_config(overrides={"data": ["x.jsonl"]}))
    words = ["protein", "sleep", "coffee", "immune", "bacteria"]
    data = TrainingSet({"d": [TrainingExample(f"about {w}?", (f"{w} study, done.",), (f"{words[i - 1]} note",))
                              for i, w in enumerate(words)]}, num_negatives=1)  # fmt: skip
    batch = collate([data[(0, i, i)] for i in range(len(words))])
    assert batch.query_output_mask is not None and batch.query_input_ids.shape[1] == 10
    assert (batch.document_output_mask.sum(1) < batch.document_attention_mask.sum(1)).any()  # punctuation dropped
    model = BiEncoderModel(encoder).eval()
    assert model.similarity == "maxsim"

    def gradients(loss_fn):
        model.zero_grad()
        loss = loss_fn(batch)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = gradients(InfoNCELoss(model, symmetric=True))
    cached_loss, cached = gradients(CachedInfoNCELoss(model, symmetric=True, mini_batch_size=2))
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain.keys() == cached.keys() and len(plain) > 10
    for name in plain:  # float32 sums in another order: equal to a part in 10^5 of the largest gradient
        assert (plain[name] - cached[name]).abs().max() <= 1e-5 * max(1.0, plain[name].abs().max().item())


def test_colbert_training_resumes_exactly(tmp_path, tiny_bert_dir):
    data = _toy_rows(tmp_path / "toy.jsonl")
    straight = train(_config(tmp_path / "a", tiny_bert_dir, data, epochs=3, checkpoint_every=3))
    config = _config(tmp_path / "b", tiny_bert_dir, data, epochs=3, checkpoint_every=3)
    with pytest.raises(RuntimeError):
        train(config, callbacks=[_CrashAt(5).callback])
    resumed = train(config)
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert _losses(tmp_path / "a" / "out") == pytest.approx(_losses(tmp_path / "b" / "out"), abs=1e-6)


def test_negatives_mined_with_a_colbert_retriever(tmp_path, tiny_bert_dir, toy_beir):
    from retrievekit.models.colbert import build_colbert
    from retrievekit.retrieval.retriever import MultiVectorRetriever
    from retrievekit.training.mining import mine_hard_negatives
    from retrievekit.training.mining_sources import mining_inputs

    model = build_colbert(tiny_bert_dir, embedding_size=16)
    examples, corpus, retriever = mining_inputs(f"{toy_beir}:test", None, model)
    assert isinstance(retriever, MultiVectorRetriever)
    mined, report = mine_hard_negatives(examples, retriever, corpus, rank_range=(1, 6), num=2)
    assert report.negatives_written > 0
    assert all(not set(e.negatives) & set(e.positives) for e in mined)
