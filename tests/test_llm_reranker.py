"""Decoder-only rerankers on tiny random causal LMs: FlagEmbedding's input (prompt around the pair,
its truncation), the "Yes" logit at the last position, layer-wise scores from chosen layers; where
FlagEmbedding is installed (the peers' environment), its FlagLLMReranker gives the same scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import build_tiny_bert, peer_python, run_peer
from retrievekit.models.llm_reranker import DEFAULT_PROMPT, LLMReranker, load_llm_reranker
from retrievekit.models.registry import load_model

PAIRS = [
    ("what is a cat?", "a cat is a small animal"),
    ("vitamin d", "vitamin d and bone health in older women"),
    ("protein folding in cells", "the immune response " * 40),  # cut from the passage's end
    ("", "an empty query"),
]


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    """A random-init 3-layer Llama under the tiny WordPiece tokenizer, [CLS] as its beginning token."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = build_tiny_bert(tmp_path_factory.mktemp("llm") / "llm", max_positions=512)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.bos_token = "[CLS]"
    tokenizer.save_pretrained(folder)
    for name in ("model.safetensors", "config.json"):
        (folder / name).unlink()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    torch.manual_seed(11)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def flagembedding_inputs(tokenizer, query: str, passage: str, max_length: int) -> list[int]:
    """FlagEmbedding's input for one pair, written out with the tokenizer's own prepare_for_model."""
    prompt = tokenizer(DEFAULT_PROMPT, add_special_tokens=False)["input_ids"]
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    q = tokenizer("A: " + query, add_special_tokens=False, max_length=max_length * 3 // 4, truncation=True)
    p = tokenizer("B: " + passage, add_special_tokens=False, max_length=max_length, truncation=True)
    first, second = [tokenizer.bos_token_id] + q["input_ids"], sep + p["input_ids"]
    # prepare_for_model(first, second, truncation="only_second", max_length=...) (gone in transformers 5):
    # tokens come off the end of the second text until the pair fits
    budget = max_length + len(sep) + len(prompt)
    return first + second[: max(0, budget - len(first))] + sep + prompt


def test_scores_are_the_yes_logit_after_flagembeddings_prompt(llm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = load_model(llm_dir, device="cpu")
    assert isinstance(model, LLMReranker) and model.num_labels == 1
    reranker = load_llm_reranker(llm_dir, max_length=64)
    ours = reranker.compute_score(PAIRS, batch_size=3)  # length-sorted, right-padded batches
    tokenizer, lm = AutoTokenizer.from_pretrained(llm_dir), AutoModelForCausalLM.from_pretrained(llm_dir).eval()
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    for (query, passage), score in zip(PAIRS, ours, strict=True):
        ids = flagembedding_inputs(tokenizer, query, passage, 64)
        with torch.no_grad():
            expected = lm(input_ids=torch.tensor([ids])).logits[0, -1, yes].item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert reranker.tokenize(PAIRS[2:3]).truncated == 1
    np.testing.assert_allclose(reranker.compute_score(PAIRS, normalize=True), 1 / (1 + np.exp(-ours)), atol=1e-6)


def test_layerwise_scores_read_earlier_layers_through_the_final_norm(llm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layered = load_llm_reranker(llm_dir, max_length=64, cutoff_layers=[1, 3])
    scores = layered.compute_score(PAIRS)
    assert scores.shape == (len(PAIRS), 2) and layered.num_labels == 2
    np.testing.assert_allclose(scores[:, 1], load_llm_reranker(llm_dir, max_length=64).compute_score(PAIRS), atol=1e-5)
    tokenizer, lm = AutoTokenizer.from_pretrained(llm_dir), AutoModelForCausalLM.from_pretrained(llm_dir).eval()
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    for (query, passage), row in zip(PAIRS, scores, strict=True):
        ids = torch.tensor([flagembedding_inputs(tokenizer, query, passage, 64)])
        with torch.no_grad():
            hidden = lm(input_ids=ids, output_hidden_states=True).hidden_states[1][0, -1]
            expected = lm.lm_head(lm.model.norm(hidden))[yes].item()
        assert row[0] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(Exception, match="cutoff layers must be between 1 and 3"):
        load_llm_reranker(llm_dir, cutoff_layers=[4])


def test_an_llm_reranker_reranks_in_evaluate(llm_dir, toy_beir, tmp_path):
    from click.testing import CliRunner

    from retrievekit.cli.main import cli

    out = tmp_path / "eval"
    args = ["evaluate", "-d", str(toy_beir), "-r", "bm25", "--rerank", str(llm_dir), "--rerank-top-k", "3",
            "--k-values", "1", "3", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [row["retriever"] for row in json.loads((out / "results.json").read_text())["systems"]]
    assert rows == ["bm25", "bm25>rerank"]


PEER_SCRIPT = """
import json, sys
from FlagEmbedding import FlagLLMReranker
model = FlagLLMReranker(sys.argv[1], use_fp16=False, devices="cpu")
scores = model.compute_score([tuple(p) for p in json.loads(sys.argv[3])], max_length=64, batch_size=3)
json.dump([float(s) for s in scores], open(sys.argv[2], "w"))
"""


@pytest.mark.skipif(peer_python() is None, reason="FlagEmbedding's environment: run benchmarks/make_peer_env.sh")
def test_scores_equal_flagembeddings_llm_reranker(llm_dir, tmp_path):
    result = tmp_path / "scores.json"
    run_peer(PEER_SCRIPT, str(llm_dir), str(result), json.dumps(PAIRS))
    theirs = json.loads(result.read_text())
    np.testing.assert_allclose(load_llm_reranker(llm_dir, max_length=64).compute_score(PAIRS), theirs, atol=1e-4)
