from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from retrievekit import load_encoder
from retrievekit.errors import ConfigError
from retrievekit.models.encoding import TokenBatch

pytest.importorskip("onnxruntime")

TEXTS = ["how do proteins fold", "sleep helps the brain consolidate memory after learning", "coffee"]


@pytest.fixture
def model_copy(tiny_bert_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, target)
    return target


def cosine(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_graph_matches_torch_and_is_cached(model_copy):
    torch_encoder = load_encoder(model_copy, pooling="mean", normalize=True, device="cpu")
    onnx_encoder = load_encoder(model_copy, pooling="mean", normalize=True, backend="onnx", quantize=None)
    np.testing.assert_allclose(onnx_encoder.encode_documents(TEXTS), torch_encoder.encode_documents(TEXTS), atol=1e-5)
    folder = model_copy / "retrievekit-onnx"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "onnx_export" and manifest["fingerprint"] == torch_encoder.fingerprint
    stamp = (folder / "shared-fp32.onnx").stat().st_mtime_ns
    load_encoder(model_copy, pooling="mean", normalize=True, backend="onnx", quantize=None)
    assert (folder / "shared-fp32.onnx").stat().st_mtime_ns == stamp  # reused, not exported again


def test_int8_graph_stays_close_and_keeps_fp32_variant(model_copy):
    torch_encoder = load_encoder(model_copy, pooling="cls", device="cpu")
    load_encoder(model_copy, pooling="cls", backend="onnx", quantize=None)
    int8 = load_encoder(model_copy, pooling="cls", backend="onnx", quantize="int8")
    assert int8.backend == "onnx" and int8.fingerprint == torch_encoder.fingerprint
    assert cosine(int8.encode_queries(TEXTS), torch_encoder.encode_queries(TEXTS)).min() > 0.98
    names = sorted(p.name for p in (model_copy / "retrievekit-onnx").glob("*.onnx"))
    assert names == ["shared-fp32.onnx", "shared-int8.onnx"]
    onnx = pytest.importorskip("onnx")
    ops = {
        name: {n.op_type for n in onnx.load(str(model_copy / "retrievekit-onnx" / name)).graph.node} for name in names
    }
    assert "FastGelu" in ops["shared-int8.onnx"] and "Erf" not in ops["shared-int8.onnx"]  # tanh GELU in int8 only
    assert "Erf" in ops["shared-fp32.onnx"] and "FastGelu" not in ops["shared-fp32.onnx"]


def test_a_changed_model_is_never_served_by_a_stale_graph(model_copy):
    mean = load_encoder(model_copy, pooling="mean", backend="onnx", quantize=None)
    cls = load_encoder(model_copy, pooling="cls", backend="onnx", quantize=None)  # another config, another fingerprint
    reference = load_encoder(model_copy, pooling="cls", device="cpu")
    np.testing.assert_allclose(cls.encode_documents(TEXTS), reference.encode_documents(TEXTS), atol=1e-5)
    assert mean.fingerprint != cls.fingerprint


def test_onnx_rejects_gpu_devices_and_unknown_quantisation(model_copy):
    with pytest.raises(ConfigError, match="runs on the CPU"):
        load_encoder(model_copy, pooling="mean", backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match="quantize must be one of"):
        load_encoder(model_copy, pooling="mean", backend="onnx", quantize="int4")
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        load_encoder(model_copy, pooling="mean", backend="tensorrt")


def test_attention_is_exported_without_nan_guards_and_the_torch_model_keeps_its_own(model_copy):
    onnx = pytest.importorskip("onnx")
    torch_encoder = load_encoder(model_copy, pooling="mean", device="cpu")
    before = torch_encoder.document_tower.backbone.config._attn_implementation
    from retrievekit.models.backends.onnx import export_onnx

    paths = export_onnx(torch_encoder, model_copy, quantize=None)
    ops = {node.op_type for node in onnx.load(str(paths["documents"])).graph.node}
    assert "Softmax" in ops and "IsNaN" not in ops  # the fused-attention export guards each softmax
    assert torch_encoder.document_tower.backbone.config._attn_implementation == before


def test_an_export_from_an_older_exporter_is_rebuilt(model_copy):
    load_encoder(model_copy, pooling="mean", backend="onnx", quantize=None)
    folder = model_copy / "retrievekit-onnx"
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["config"]["export_version"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    stamp = (folder / "shared-fp32.onnx").stat().st_mtime_ns
    load_encoder(model_copy, pooling="mean", backend="onnx", quantize=None)
    assert (folder / "shared-fp32.onnx").stat().st_mtime_ns != stamp
    assert json.loads((folder / "manifest.json").read_text())["config"]["export_version"] >= 2


def test_a_backbone_that_cannot_switch_attention_in_place_is_rebuilt_for_the_export(model_copy, monkeypatch):
    onnx = pytest.importorskip("onnx")
    torch_encoder = load_encoder(model_copy, pooling="mean", device="cpu")
    backbone = torch_encoder.document_tower.backbone
    monkeypatch.setattr(type(backbone), "_can_set_attn_implementation", lambda *a: False, raising=False)
    from retrievekit.models.backends.onnx import export_onnx

    paths = export_onnx(torch_encoder, model_copy, quantize=None)
    assert "IsNaN" not in {node.op_type for node in onnx.load(str(paths["documents"])).graph.node}
    assert torch_encoder.document_tower.backbone is backbone  # its own backbone back
    onnx_encoder = load_encoder(model_copy, pooling="mean", backend="onnx", quantize=None)
    np.testing.assert_allclose(onnx_encoder.encode_documents(TEXTS), torch_encoder.encode_documents(TEXTS), atol=1e-5)


def _padded(lengths, width, vocab, left=False):
    rng = np.random.default_rng(0)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        columns = slice(width - n, width) if left else slice(0, n)
        ids[row, columns] = rng.integers(5, vocab, n)
        mask[row, columns] = 1
    return ids, mask


def test_runner_slices_by_token_budget_trims_padding_and_keeps_row_order(model_copy):
    import onnxruntime as ort

    from retrievekit.models.backends.onnx import OnnxRunner

    encoder = load_encoder(model_copy, pooling="mean", normalize=True, backend="onnx", quantize=None)
    graph = model_copy / "retrievekit-onnx" / "shared-fp32.onnx"
    vocab = len(encoder.document_tower.tokenizer)
    plain = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    runner = OnnxRunner(graph, workers=2, slice_tokens=20)
    right = _padded([3, 17, 9, 17, 1, 12, 5], 24, vocab)  # unsorted, ties, padding past the longest
    left = _padded([4, 11, 2], 11, vocab, left=True)  # left padding must not be trimmed away
    done: list[int] = []
    outputs = runner.run_many([TokenBatch(*right), TokenBatch(*left)], done.append)
    for (ids, mask), output in zip((right, left), outputs, strict=True):
        reference = plain.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        np.testing.assert_allclose(output, reference, atol=1e-5)
    # 20-token slices: 17 | 17 | 12 | 9+5 | 3+1 for the first batch, 11 | 4+2 for the second
    assert sorted(done) == [1, 1, 1, 1, 2, 2, 2] and sum(done) == 10
    np.testing.assert_allclose(runner(TokenBatch(*right)), outputs[0], atol=1e-6)


def test_runner_reports_a_failed_slice_in_the_caller_and_rejects_zero_workers(model_copy):
    from retrievekit.models.backends.onnx import OnnxRunner

    load_encoder(model_copy, pooling="mean", backend="onnx", quantize=None)
    graph = model_copy / "retrievekit-onnx" / "shared-fp32.onnx"
    ids, mask = _padded([5, 3, 4], 5, 20)  # ids below any tiny vocabulary size
    with pytest.raises(Exception, match=r"(?i)input_ids|data type|INVALID_ARGUMENT"):
        OnnxRunner(graph, workers=2, slice_tokens=5).run_many(
            [TokenBatch(ids, mask), TokenBatch(ids.astype(np.int32), mask)]
        )
    with pytest.raises(ConfigError, match="workers"):
        OnnxRunner(graph, workers=0)


def test_the_quantize_option_picks_the_onnx_graph_and_refuses_other_backends(model_copy):
    """``--quantize none`` (every command's model options) serves the float32 graph, which scores as
    torch does; int8 stays the onnx default; the option means nothing to torch, so it is refused."""
    from click.testing import CliRunner

    from retrievekit.cli._model_options import load_from_options
    from retrievekit.cli.main import cli

    options = {"model": str(model_copy), "pooling": "mean", "normalize": True, "query_prompt": None,
               "document_prompt": None, "device": None, "dtype": "float32", "trust_remote_code": False}  # fmt: skip
    torch_vectors = load_from_options(**options, backend="torch").encode_documents(TEXTS)
    fp32 = load_from_options(**options, backend="onnx", quantize="none")
    assert fp32.runtime == "onnx-fp32"
    np.testing.assert_allclose(fp32.encode_documents(TEXTS), torch_vectors, atol=1e-5)
    assert load_from_options(**options, backend="onnx").runtime == "onnx-int8"
    assert load_from_options(**options, backend="onnx", quantize="int8").runtime == "onnx-int8"
    with pytest.raises(ConfigError, match=r"^--quantize none applies to the onnx backend: add --backend onnx$"):
        load_from_options(**options, backend="torch", quantize="none")
    from retrievekit.cli.link import _linking_model  # `retrievekit link` hands its model options on too

    linking = options | {"backend": "onnx", "quantize": "none", "document_length": None, "model_family": None}
    assert _linking_model(False, linking)[0].runtime == "onnx-fp32"
    args = ["model", "info", "--model", str(model_copy), "--pooling", "mean", "--backend", "onnx", "--quantize", "none"]
    printed = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert printed.exit_code == 0 and "onnx-fp32" in printed.output, printed.output
