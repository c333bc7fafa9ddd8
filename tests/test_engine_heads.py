"""The encoder engine at token level: every head (pooled, per-token, sparse, pair score) runs through
the same tokenisation, length-sorted batching and runners, and comes back in input order equal to
the model run on each text alone."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from retrievekit.models.backends.torch_runner import TorchRunner
from retrievekit.models.encoding import encode_chunks, encode_pair_chunks, tokenize_pairs
from retrievekit.models.heads import ScoreHead, SpladeHead, TokenVectorsHead
from retrievekit.models.spec import TowerSpec
from retrievekit.models.tower import load_tower
from retrievekit.outputs import MultiVectors, SparseVectors

TEXTS = [
    "proteins fold into three dimensional structures",
    "sleep",
    "t cells recognise antigens and coordinate the adaptive immune response in older adults",
    "coffee and heart disease",
    "",
]


def _task_model(tiny_bert_dir, tmp_path, model_class: str, **config_changes):
    """A random task head (masked LM, classification) on the tiny BERT's config and tokenizer."""
    import transformers

    target = tmp_path / model_class
    shutil.copytree(tiny_bert_dir, target)
    for weights in target.glob("*.safetensors"):
        weights.unlink()
    config = transformers.BertConfig.from_pretrained(tiny_bert_dir, **config_changes)
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(target, safe_serialization=True)
    return target


def _alone(tower, text: str) -> torch.Tensor:
    encoded = tower.tokenizer([text], return_tensors="pt", truncation=True, max_length=64)
    with torch.inference_mode():
        return tower(encoded["input_ids"], encoded["attention_mask"])[0]


def test_per_token_head_gives_ragged_vectors_in_input_order(tiny_bert_dir):
    torch.manual_seed(0)
    tower = load_tower(tiny_bert_dir, TowerSpec(), head=TokenVectorsHead(nn.Linear(32, 16, bias=False)))
    runner = TorchRunner(tower, torch.device("cpu"))
    chunks = list(
        encode_chunks(TEXTS, tokenizer=tower.tokenizer, runners=[runner], max_length=64, batch_size=2,
                      chunk_size=3, output="multivector")
    )  # fmt: skip
    assert all(isinstance(c, MultiVectors) for c in chunks) and [len(c) for c in chunks] == [3, 2]
    vectors = MultiVectors.concatenate(chunks)  # type: ignore[arg-type]
    for text, row in zip(TEXTS, vectors, strict=True):
        expected = _alone(tower, text).numpy()
        assert row.shape == expected.shape == (len(tower.tokenizer(text)["input_ids"]), 16)
        np.testing.assert_allclose(row, expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(row, axis=1), 1.0, atol=1e-5)


def test_per_token_head_through_onnx_slices_matches_torch(tiny_bert_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from retrievekit.models.backends.onnx import OnnxRunner, _export_tower

    torch.manual_seed(1)
    tower = load_tower(tiny_bert_dir, TowerSpec(), head=TokenVectorsHead(nn.Linear(32, 8, bias=False)))
    _export_tower(tower, tmp_path / "tokens.onnx")
    assert not any(m.training for m in tower.modules())  # the export leaves the model as it found it
    runs = {}
    for name, runner in (
        ("torch", TorchRunner(tower, torch.device("cpu"))),
        ("onnx", OnnxRunner(tmp_path / "tokens.onnx", workers=2, slice_tokens=12)),  # slices cut widths
    ):
        (runs[name],) = encode_chunks(
            TEXTS, tokenizer=tower.tokenizer, runners=[runner], max_length=64, batch_size=8, output="multivector"
        )
    for ours, reference in zip(runs["onnx"], runs["torch"], strict=True):
        np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_sparse_head_gives_csr_rows_equal_to_the_formula(tiny_bert_dir, tmp_path):
    folder = _task_model(tiny_bert_dir, tmp_path, "BertForMaskedLM")
    tower = load_tower(folder, TowerSpec(), head=SpladeHead("max"))
    (sparse,) = encode_chunks(
        TEXTS[:4], tokenizer=tower.tokenizer, runners=[TorchRunner(tower, torch.device("cpu"))], max_length=64,
        batch_size=3, output="sparse",
    )  # fmt: skip
    assert isinstance(sparse, SparseVectors) and len(sparse) == 4 and sparse.vocab_size == len(tower.tokenizer)
    for row, text in enumerate(TEXTS[:4]):
        encoded = tower.tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            logits = tower.backbone(**encoded).logits[0]
        expected = torch.log1p(torch.relu(logits)).amax(dim=0).numpy()
        indices, values = sparse.row(row)
        np.testing.assert_array_equal(indices, np.flatnonzero(expected))
        np.testing.assert_allclose(values, expected[indices], atol=1e-5)


def test_pair_scores_come_back_in_input_order_with_truncations_counted(tiny_bert_dir, tmp_path):
    folder = _task_model(tiny_bert_dir, tmp_path, "BertForSequenceClassification", num_labels=1)
    tower = load_tower(folder, TowerSpec(), head=ScoreHead())
    pairs = [("how do proteins fold", TEXTS[0]), ("sleep", TEXTS[2]), ("coffee", TEXTS[3]), ("immune", "")]
    from retrievekit.models.encoding import EncodeStats

    stats = EncodeStats()
    (scores,) = encode_pair_chunks(
        pairs, tokenizer=tower.tokenizer, runners=[TorchRunner(tower, torch.device("cpu"))], max_length=64,
        batch_size=2, stats=stats,
    )  # fmt: skip
    assert isinstance(scores, np.ndarray) and scores.shape == (4,) and stats.truncated == 0
    for (query, document), score in zip(pairs, scores, strict=True):
        encoded = tower.tokenizer([query], [document], return_tensors="pt")
        with torch.inference_mode():
            expected = tower.backbone(**encoded).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)
    cut = tokenize_pairs(tower.tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], max_length=8)
    full = [len(tower.tokenizer(q, d)["input_ids"]) for q, d in pairs]
    assert cut.truncated == sum(n > 8 for n in full) == 2 and max(cut.lengths) == 8 and cut.token_type_ids is not None
    assert cut.token_type_ids[0][:3] == [0, 0, 0] and cut.token_type_ids[0][-1] == 1  # query first
    with pytest.raises(TypeError, match="pair at position 1"):
        list(encode_pair_chunks([("a", "b"), ("only one",)], tokenizer=tower.tokenizer, runners=[], max_length=8,
                                batch_size=2))  # fmt: skip


def test_import_and_help_load_neither_torch_nor_transformers():
    code = (
        "import sys, retrievekit, retrievekit.cli.main\n"
        "from retrievekit.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'faiss', 'bm25s') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "evaluate" in result.stdout


def test_ragged_and_sparse_outputs_save_and_load_checked(tmp_path):
    import json

    from retrievekit.errors import ArtifactError

    rows = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((0, 3), np.float32), np.ones((1, 3), np.float32)]
    multi = MultiVectors.from_list(rows)
    loaded = MultiVectors.load(multi.save(tmp_path / "mv"))
    assert [r.tolist() for r in loaded] == [r.tolist() for r in rows]
    sparse = SparseVectors.from_dense(np.array([[0, 1.5, 0], [2.0, 0, 0]], dtype=np.float32))
    again = SparseVectors.load(sparse.save(tmp_path / "sv"))
    np.testing.assert_array_equal(again.to_dense(), sparse.to_dense())
    manifest = json.loads((tmp_path / "sv" / "manifest.json").read_text())
    manifest["config"]["vocab_size"] = 1  # a term id beyond the vocabulary
    (tmp_path / "sv" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="outside the vocabulary"):
        SparseVectors.load(tmp_path / "sv")
    np.save(tmp_path / "mv" / "offsets.npy", np.array([0, 1], dtype=np.int64))  # fewer rows than the manifest
    with pytest.raises(ArtifactError, match="do not match"):
        MultiVectors.load(tmp_path / "mv")
