"""Training parts on hand-made inputs: data readers, batches, losses, mining, checkpoint files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from retrievekit.data.beir import load_dataset
from retrievekit.data.records import Corpus, Document
from retrievekit.errors import ArtifactError, ConfigError, DataFormatError
from retrievekit.hits import Hits
from retrievekit.training.batches import DatasetBatchSampler, TrainingBatch, TrainingCollator, TrainingSet, text_hash
from retrievekit.training.checkpoint_io import SafetensorsCheckpointIO
from retrievekit.training.config import load_config
from retrievekit.training.data import TrainingExample, examples_from_split, read_training_file
from retrievekit.training.losses import InfoNCELoss, KLDivergenceLoss, MarginMSELoss
from retrievekit.training.mining import (
    Candidate,
    drop_false_negatives,
    mine_hard_negatives,
    sample_negatives,
    write_training_rows,
)
from retrievekit.training.model import BiEncoderModel


# ---- data -------------------------------------------------------------------------------------
def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_flagembedding_rows_triplets_and_tsv(tmp_path):
    rows = _write(tmp_path / "train.jsonl", [
        json.dumps({"query": "q", "pos": ["p1", "p2"], "neg": ["n"], "pos_scores": [0.9, 0.8], "neg_scores": [0.1],
                    "prompt": "Q: "}),
        json.dumps({"anchor": "a", "positive": "b", "negative": "c"}),
    ])  # fmt: skip
    first, second = read_training_file(rows)
    assert first == TrainingExample("q", ("p1", "p2"), ("n",), (0.9, 0.8), (0.1,), "Q: ")
    assert second == TrainingExample("a", ("b",), ("c",))
    triples = read_training_file(_write(tmp_path / "t.tsv", ["q\tp\tn", "q2\tp2"]))
    assert triples == [TrainingExample("q", ("p",), ("n",)), TrainingExample("q2", ("p2",))]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"pos": ["p"]}', "missing field 'query'"),
        ('{"query": "q", "pos": []}', "needs at least one positive"),
        ('{"query": "q", "pos": "p", "neg": [1]}', "must be a string or a list of strings"),
        ('{"query": "q", "pos": ["p"], "pos_scores": [1, 2]}', "has 2 scores for 1 texts"),
        ('{"query": "q", "pos": ["p"], "pos_scores": ["x"]}', "must be a list of numbers"),
        ('{"query": "q", "pos": ["p"', "malformed JSON"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, line, problem):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"query": "ok", "pos": ["p"]}), line])
    with pytest.raises(DataFormatError) as err:
        read_training_file(path)
    assert str(err.value).startswith(f"{path}:2: ") and problem in str(err.value)


def test_tsv_with_wrong_field_count_is_an_error(tmp_path):
    with pytest.raises(DataFormatError, match=r"t.tsv:1: expected 'query<TAB>positive"):
        read_training_file(_write(tmp_path / "t.tsv", ["only one field"]))


def test_examples_from_beir_split_use_relevant_documents_only(toy_beir):
    examples = examples_from_split(load_dataset(toy_beir).load("test"))
    by_query = {e.query: e.positives for e in examples}
    assert by_query["is coffee bad for the heart"] == (
        "Coffee Moderate coffee drinking is not linked to heart disease in large cohorts.",
    )  # d3 has grade 0: not a positive
    assert len(examples) == 4


# ---- batches ----------------------------------------------------------------------------------
def test_every_batch_comes_from_one_dataset_and_order_is_reproducible():
    sampler = DatasetBatchSampler([5, 3], batch_size=2, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5  # 3 batches of dataset 0 (one partial), 2 of dataset 1
    assert all(len({d for d, _, _ in batch}) == 1 for batch in batches)
    covered = sorted((d, i) for batch in batches for d, i, _ in batch)
    assert covered == [(0, i) for i in range(5)] + [(1, i) for i in range(3)]
    assert batches == list(DatasetBatchSampler([5, 3], batch_size=2, seed=7))
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_sampler_resumes_after_the_trained_batches():
    full = list(DatasetBatchSampler([10], batch_size=2, seed=1))
    sampler = DatasetBatchSampler([10], batch_size=2, seed=1)
    sampler.mark_trained(0, 3)
    resumed = DatasetBatchSampler([10], batch_size=2, seed=1)
    resumed.load_state_dict(sampler.state_dict())
    assert list(resumed) == full[3:]
    assert list(resumed) == full  # the skip applies to the interrupted pass only
    with pytest.raises(ConfigError, match="seed"):
        DatasetBatchSampler([10], batch_size=2, seed=2).load_state_dict(sampler.state_dict())


def test_ranks_get_disjoint_equal_shares():
    shares = [list(DatasetBatchSampler([9], batch_size=2, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 2  # drop_last: 4 full batches split in two
    seen = [(d, i) for share in shares for batch in share for d, i, _ in batch]
    assert len(seen) == len(set(seen)) == 8


def test_training_set_samples_positives_negatives_and_teacher_scores():
    example = TrainingExample("q", ("p1", "p2"), ("n1", "n2", "n3"), (1.0, 2.0), (0.1, 0.2, 0.3))
    data = TrainingSet({"d": [example, TrainingExample("q2", ("x",))]}, num_negatives=2)
    sample = data[(0, 0, 5)]
    assert sample.positive in example.positives and len(set(sample.negatives)) == 2
    scores = dict(zip(example.positives + example.negatives, example.positive_scores + example.negative_scores,
                      strict=True))  # fmt: skip
    assert sample.teacher_scores == tuple(scores[t] for t in (sample.positive, *sample.negatives))
    assert data[(0, 0, 5)] == sample  # same key, same draw
    random_negatives = data[(0, 1, 5)]  # no hard negatives: positives of other examples stand in
    assert set(random_negatives.negatives) <= {"p1", "p2", "x"} and random_negatives.teacher_scores is None


def test_further_positives_are_distinct_names_drawn_after_the_other_draws():
    example = TrainingExample("q", ("p1", "p2", "p3", "p4"), ("n1", "n2", "n3"))
    single = TrainingSet({"d": [example, TrainingExample("q2", ("x",), ("n1",))]}, num_negatives=2)
    several = TrainingSet({"d": [example, TrainingExample("q2", ("x",), ("n1",))]}, num_negatives=2,
                          positives_per_query=3)  # fmt: skip
    for seed in range(6):
        one, three = single[(0, 0, seed)], several[(0, 0, seed)]
        assert (three.positive, three.negatives) == (one.positive, one.negatives) and one.further_positives == ()
        assert len(set(three.further_positives)) == 2 and set(three.further_positives) <= set(example.positives)
        assert three.positive not in three.further_positives
    assert several[(0, 1, 0)].further_positives == ()  # a query with one positive has no further one
    everything = TrainingSet({"d": [example]}, positives_per_query=10)[(0, 0, 1)]
    assert sorted((everything.positive, *everything.further_positives)) == list(example.positives)
    with pytest.raises(ConfigError, match="positives_per_query"):
        TrainingSet({"d": [example]}, positives_per_query=0)


def test_collator_lays_out_positives_then_negatives(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    collate = TrainingCollator(tokenizer, tokenizer, query_max_length=8, document_max_length=16, query_prompt="q: ")
    data = TrainingSet({"d": [TrainingExample("sleep", ("memory",), ("coffee",)),
                              TrainingExample("heart", ("coffee",), ("sleep",))]}, num_negatives=1)  # fmt: skip
    batch = collate([data[(0, 0, 1)], data[(0, 1, 1)]])
    assert batch.size == 2 and batch.num_negatives == 1
    assert batch.document_input_ids.shape[0] == 4
    assert batch.document_hashes.tolist() == [text_hash(t) for t in ("memory", "coffee", "coffee", "sleep")]
    assert tokenizer.decode(batch.query_input_ids[0], skip_special_tokens=True).startswith("q")


def test_collator_puts_further_positives_after_every_negative(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    collate = TrainingCollator(tokenizer, tokenizer, query_max_length=8, document_max_length=16)
    data = TrainingSet({"d": [TrainingExample("sleep", ("memory", "recall"), ("coffee",)),
                              TrainingExample("heart", ("coffee",), ("sleep",))]}, num_negatives=1,
                       positives_per_query=2)  # fmt: skip
    first = data[(0, 0, 1)]
    batch = collate([first, data[(0, 1, 1)]])
    assert batch.num_negatives == 1 and batch.document_input_ids.shape[0] == 5
    texts = [first.positive, "coffee", "coffee", "sleep", *first.further_positives]
    assert batch.document_hashes.tolist() == [text_hash(t) for t in texts]
    assert {first.positive, *first.further_positives} == {"memory", "recall"}


# ---- losses -----------------------------------------------------------------------------------
class _FixedModel(torch.nn.Module):
    """A stand-in model whose 'encoders' return the given vectors (the batch carries them)."""

    similarity = "dot"

    def encode_queries(self, batch):
        return batch.query_input_ids.float()

    def encode_documents(self, batch):
        return batch.document_input_ids.float()

    candidate_scores = BiEncoderModel.candidate_scores  # the real pairing of queries with their candidates


def _batch(queries, documents, positive_texts, document_texts, teacher=None, k=0) -> TrainingBatch:
    return TrainingBatch(
        query_input_ids=torch.tensor(queries), query_attention_mask=torch.ones(len(queries), 1),
        document_input_ids=torch.tensor(documents), document_attention_mask=torch.ones(len(documents), 1),
        document_hashes=torch.tensor([text_hash(t) for t in document_texts]),
        positive_hashes=torch.tensor([[text_hash(t)] for t in positive_texts]),
        teacher_scores=None if teacher is None else torch.tensor(teacher), num_negatives=k,
    )  # fmt: skip


def _cross_entropy(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(v) for v in row))


def test_infonce_matches_a_hand_computation_and_masks_a_repeated_positive():
    q = [[1.0, 0.0], [0.0, 1.0]]
    d = [[1.0, 0.0], [0.5, 0.5], [0.0, 0.2], [0.3, 0.0]]  # positives of q0, q1, then one negative each
    batch = _batch(q, d, ["a", "b"], ["a", "b", "n0", "n1"], k=1)
    loss = InfoNCELoss(_FixedModel(), temperature=0.5)(batch)
    scores = (torch.tensor(q) @ torch.tensor(d).T / 0.5).tolist()
    expected = (_cross_entropy(scores[0], 0) + _cross_entropy(scores[1], 1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    same = _batch(q, d, ["a", "a"], ["a", "a", "n0", "n1"], k=1)  # both queries share positive text "a"
    masked = InfoNCELoss(_FixedModel(), temperature=0.5)(same)
    unmasked = InfoNCELoss(_FixedModel(), temperature=0.5, mask_false_negatives=False)(same)
    expected = (_cross_entropy([scores[0][0], scores[0][2], scores[0][3]], 0)
                + _cross_entropy([scores[1][1], scores[1][2], scores[1][3]], 0)) / 2  # fmt: skip
    assert masked.item() == pytest.approx(expected, rel=1e-6) and unmasked.item() > masked.item()


def test_marginal_infonce_sums_the_softmax_over_every_positive_column_once():
    q = [[1.0, 0.0], [0.0, 1.0]]
    # q0's positives a, a2; q1's b. Columns: positives, one negative each, q0's further positive a2,
    # then a repeat of "a" (counted once)
    d = [[1.0, 0.0], [0.5, 0.5], [0.0, 0.2], [0.3, 0.0], [0.6, 0.1], [1.0, 0.0]]
    texts = ["a", "b", "n0", "n1", "a2", "a"]
    batch = _batch(q, d, ["a", "b"], texts, k=1)
    batch.positive_hashes = torch.tensor([[text_hash("a"), text_hash("a2")], [text_hash("b"), text_hash("b")]])
    s = (torch.tensor(q) @ torch.tensor(d).T / 0.5).tolist()

    def marginal(row: list[float], relevant: list[int]) -> float:
        kept = row[:5]  # the repeat of "a" is left out
        return -math.log(sum(math.exp(kept[c]) for c in relevant) / sum(math.exp(v) for v in kept))

    expected = (marginal(s[0], [0, 4]) + marginal(s[1], [1])) / 2
    loss = InfoNCELoss(_FixedModel(), temperature=0.5, marginal=True)(batch)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    masked = InfoNCELoss(_FixedModel(), temperature=0.5)(batch)  # the plain loss masks a2 for q0 instead
    expected_masked = (_cross_entropy([s[0][c] for c in (0, 1, 2, 3)], 0) + _cross_entropy(s[1], 1)) / 2
    assert masked.item() == pytest.approx(expected_masked, rel=1e-6) and loss.item() < masked.item()
    # the pairing of each query with its own candidates ignores the further positives
    pairs = _FixedModel().candidate_scores(batch)
    assert pairs.shape == (2, 2)
    assert pairs.flatten().tolist() == pytest.approx([s[0][0] / 2, s[0][2] / 2, s[1][1] / 2, s[1][3] / 2])


def test_symmetric_infonce_adds_the_document_to_query_term():
    q, d = [[1.0, 0.0], [0.0, 1.0]], [[0.9, 0.1], [0.2, 0.7]]
    batch = _batch(q, d, ["a", "b"], ["a", "b"])
    s = (torch.tensor(q) @ torch.tensor(d).T / 0.1).tolist()
    forward = (_cross_entropy(s[0], 0) + _cross_entropy(s[1], 1)) / 2
    backward = (_cross_entropy([s[0][0], s[1][0]], 0) + _cross_entropy([s[0][1], s[1][1]], 1)) / 2
    loss = InfoNCELoss(_FixedModel(), temperature=0.1, symmetric=True)(batch)
    assert loss.item() == pytest.approx((forward + backward) / 2, rel=1e-4)


def test_learnable_temperature_is_a_parameter_that_gets_gradients():
    loss_fn = InfoNCELoss(_FixedModel(), temperature=0.2, learnable_temperature=True)
    assert loss_fn.temperature == pytest.approx(0.2)
    loss_fn(_batch([[1.0, 0.0], [0.0, 1.0]], [[0.9, 0.1], [0.2, 0.7]], ["a", "b"], ["a", "b"])).backward()
    assert loss_fn.log_scale.grad is not None and loss_fn.log_scale.grad.item() != 0


def test_margin_mse_and_kl_on_hand_made_scores():
    q = [[1.0, 0.0]]
    d = [[0.8, 0.0], [0.2, 0.0], [0.5, 0.0]]  # student scores 0.8 (positive), 0.2, 0.5
    teacher = [[3.0, 1.0, 2.0]]
    batch = _batch(q, d, ["p"], ["p", "n1", "n2"], teacher=teacher, k=2)
    margin = MarginMSELoss(_FixedModel())(batch)
    assert margin.item() == pytest.approx(((0.6 - 2.0) ** 2 + (0.3 - 1.0) ** 2) / 2, rel=1e-6)
    kl = KLDivergenceLoss(_FixedModel(), temperature=1.0, teacher_temperature=1.0)(batch)
    p = torch.softmax(torch.tensor(teacher[0]), 0)
    log_s = torch.log_softmax(torch.tensor([0.8, 0.2, 0.5]), 0)
    assert kl.item() == pytest.approx(float((p * (p.log() - log_s)).sum()), rel=1e-5)
    assert KLDivergenceLoss(_FixedModel())(_batch(q, d, ["p"], ["p", "n1", "n2"], teacher=[[3.0, 1.0, 2.0]], k=2))
    with pytest.raises(ConfigError, match="teacher scores"):
        MarginMSELoss(_FixedModel())(_batch(q, d, ["p"], ["p", "n1", "n2"], k=2))


# ---- mining -----------------------------------------------------------------------------------
class _FixedRetriever:
    def __init__(self, ranked: list[tuple[str, float]]) -> None:
        self.ranked = ranked

    def search(self, queries, k=10):
        ids, scores = zip(*self.ranked[:k], strict=True)
        return [Hits(list(ids), np.array(scores)) for _ in queries]


def test_mining_drops_positives_and_near_positive_scores_then_samples_the_window(tmp_path):
    corpus = Corpus([Document(f"d{i}", f"text {i}") for i in range(8)])
    ranked = [("d3", 0.95), ("d0", 0.90), ("d1", 0.89), ("d2", 0.70), ("d4", 0.60), ("d5", 0.50), ("d6", 0.4)]
    example = TrainingExample("query", ("text 0",))
    candidates = [Candidate(r, i, corpus[i].full_text, s) for r, (i, s) in enumerate(ranked, start=1)]
    kept = drop_false_negatives(candidates, example.positives, relative_margin=0.05)
    assert [c.doc_id for c in kept] == ["d2", "d4", "d5", "d6"]  # d0 positive; d3, d1 above 0.855
    kept = drop_false_negatives(candidates, example.positives, margin=0.25)
    assert [c.doc_id for c in kept] == ["d4", "d5", "d6"]
    assert sample_negatives(kept, (5, 6), 5, np.random.default_rng(0)) == kept[:2]  # ranks 5-6 only

    mined, report = mine_hard_negatives([example], _FixedRetriever(ranked), corpus, rank_range=(2, 7), num=2,
                                        relative_margin=0.05)  # fmt: skip
    assert len(mined[0].negatives) == 2 and set(mined[0].negatives) <= {"text 2", "text 4", "text 5", "text 6"}
    assert report.positives_dropped == 1 and report.false_negatives_dropped == 2
    out = write_training_rows(tmp_path / "mined.jsonl", mined)
    assert read_training_file(out) == mined


# ---- checkpoints and config --------------------------------------------------------------------
def test_checkpoint_files_round_trip_without_pickle(tmp_path):
    state = {
        "state_dict": {"w": torch.randn(3, 2), "flag": torch.tensor([True, False])},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.99)}]}],
        "rng": torch.get_rng_state(), "epoch": 1, "path": tmp_path, "none": None,
    }  # fmt: skip
    io = SafetensorsCheckpointIO()
    io.save_checkpoint(state, tmp_path / "step=3.ckpt")
    loaded = io.load_checkpoint(tmp_path / "step=3.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert loaded["optimizer_states"][0]["state"][0]["step"].item() == 3.0
    assert loaded["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(loaded["rng"], state["rng"]) and loaded["path"] == str(tmp_path)
    with pytest.raises(TypeError, match=r"checkpoint.bad is a object"):
        io.save_checkpoint({"bad": object()}, tmp_path / "x.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ArtifactError, match="not a readable"):
        io.load_checkpoint(tmp_path / "junk.ckpt")


def test_config_from_yaml_sections_with_flag_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "model: {model: minilm}\ndata: {data: [a.jsonl], batch_size: 8}\noptimizer: {learning_rate: 1e-4}\n"
    )
    config = load_config(path, {"batch_size": "16", "symmetric": "true"})
    assert config.data.batch_size == 16 and config.data.data == ["a.jsonl"]
    assert config.optimizer.learning_rate == 1e-4 and config.loss.symmetric is True
    path.write_text("optimizer: {learning_rat: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown option.*learning_rat"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read 'x' as int"):
        load_config(None, {"batch_size": "x"})
    with pytest.raises(ConfigError, match="set marginal: true"):
        load_config(None, {"positives_per_query": "3"})
    with pytest.raises(ConfigError, match="marginal is an option of the infonce"):
        load_config(None, {"marginal": "true", "loss": "margin_mse"})
    with pytest.raises(ConfigError, match="positives_per_query must be at least 1"):
        load_config(None, {"positives_per_query": "0", "marginal": "true"})


def _tiny_model_and_batch(tiny_bert_dir):
    from retrievekit import load_encoder
    from retrievekit.training.model import BiEncoderModel

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    tokenizer = encoder.query_tower.tokenizer
    collate = TrainingCollator(tokenizer, tokenizer, query_max_length=16, document_max_length=32)
    words = ["protein", "sleep", "coffee", "immune", "bacteria"]
    data = TrainingSet({"d": [TrainingExample(f"about {w}", (f"{w} study",), (f"{words[i - 1]} note",))
                              for i, w in enumerate(words)]}, num_negatives=1)  # fmt: skip
    return BiEncoderModel(encoder), collate([data[(0, i, i)] for i in range(len(words))])


@pytest.mark.parametrize(("mode", "mini_batch"), [("eval", 2), ("train", 64)])
def test_cached_infonce_gives_the_plain_loss_and_gradients(tiny_bert_dir, mode, mini_batch):
    from retrievekit.training.losses import CachedInfoNCELoss

    model, batch = _tiny_model_and_batch(tiny_bert_dir)
    model.train(mode == "train")  # with dropout, the cached pass replays each chunk's random state

    def gradients(loss_fn):
        model.zero_grad()
        torch.manual_seed(0)
        loss = loss_fn(batch)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = gradients(InfoNCELoss(model, symmetric=True))
    cached_loss, cached = gradients(CachedInfoNCELoss(model, symmetric=True, mini_batch_size=mini_batch))
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain.keys() == cached.keys() and len(plain) > 10
    assert max((plain[n] - cached[n]).abs().max().item() for n in plain) < 1e-5
    with pytest.raises(ConfigError, match="gather"):
        CachedInfoNCELoss(model, gather_across_devices=True)


def test_a_tensor_under_several_names_is_stored_once(tmp_path):
    from retrievekit.training.checkpoint_io import SafetensorsCheckpointIO, encode_checkpoint

    shared = torch.randn(4, 3)
    checkpoint = {"state_dict": {"model.query_tower.w": shared, "model.document_tower.w": shared, "b": torch.ones(2)}}
    _, tensors = encode_checkpoint(checkpoint)
    assert len(tensors) == 2  # the shared tower's weight once
    io = SafetensorsCheckpointIO()
    io.save_checkpoint(checkpoint, tmp_path / "c.ckpt")
    loaded = io.load_checkpoint(tmp_path / "c.ckpt")["state_dict"]
    assert torch.equal(loaded["model.query_tower.w"], shared) and torch.equal(loaded["model.document_tower.w"], shared)
