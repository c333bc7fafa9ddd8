from __future__ import annotations

import shutil

import numpy as np
import pytest

from retrievekit import load_encoder

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from retrievekit.models.backends.onnx_graph import approximate_gelu, drop_padding_mask  # noqa: E402


@pytest.fixture
def fp32_graph(tiny_bert_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, target)
    encoder = load_encoder(target, pooling="mean", normalize=True, backend="onnx", quantize=None)
    layers = encoder.document_tower.backbone.config.num_hidden_layers
    return onnx.load(str(target / "retrievekit-onnx" / "shared-fp32.onnx")), layers


def run(model, ids, mask):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def batch(lengths, width):
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(5, 5 + n) % 40 + 5
        mask[row, :n] = 1
    return ids, mask


def test_the_mask_is_dropped_before_each_softmax_and_unpadded_input_gives_the_same(fp32_graph):
    original, layers = fp32_graph
    unpadded = onnx.ModelProto()
    unpadded.CopyFrom(original)
    assert drop_padding_mask(unpadded) == layers
    onnx.checker.check_model(unpadded)
    softmax_inputs = {n.input[0] for n in unpadded.graph.node if n.op_type == "Softmax"}
    producers = {o: n.op_type for n in unpadded.graph.node for o in n.output}
    assert all(producers[name] != "Add" for name in softmax_inputs)
    ids, mask = batch([9, 9, 9], 9)
    np.testing.assert_allclose(run(unpadded, ids, mask), run(original, ids, mask), atol=1e-6)
    ids, mask = batch([9, 4, 2], 9)  # with padding the mask matters: that graph is not for these
    assert not np.allclose(run(unpadded, ids, mask), run(original, ids, mask), atol=1e-3)
    assert drop_padding_mask(unpadded) == 0  # nothing left to drop


def test_a_learned_bias_added_before_softmax_is_kept():
    mask_bias = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mask_f"], ["inverted"]),
        helper.make_node("Mul", ["inverted", "minus_big"], ["additive"]),
        helper.make_node("MatMul", ["x", "x"], ["scores"]),
        helper.make_node("Add", ["scores", "additive"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["y_mask"], axis=-1),
        helper.make_node("Add", ["additive", "learned"], ["biased"]),  # relative-position style bias
        helper.make_node("Add", ["scores", "biased"], ["masked_biased"]),
        helper.make_node("Softmax", ["masked_biased"], ["y_bias"], axis=-1),
    ]
    graph = helper.make_graph(
        mask_bias,
        "scores",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("y_mask", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("y_bias", TensorProto.FLOAT, [1, 4, 4]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(-1e4, np.float32), "minus_big"),
            numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 10, "learned"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert drop_padding_mask(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Add") == 2 and "Cast" in ops  # the biased branch and its mask stay
    x = np.random.default_rng(0).standard_normal((1, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_mask, y_bias = session.run(None, {"x": x, "attention_mask": np.ones((1, 4), np.int64)})
    scores = x @ x
    np.testing.assert_allclose(y_mask, np.exp(scores) / np.exp(scores).sum(-1, keepdims=True), rtol=1e-5)
    biased = scores + np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    np.testing.assert_allclose(y_bias, np.exp(biased) / np.exp(biased).sum(-1, keepdims=True), rtol=1e-5)


def test_exact_gelu_becomes_fast_gelu_within_its_approximation(fp32_graph):
    original, layers = fp32_graph
    fast = onnx.ModelProto()
    fast.CopyFrom(original)
    assert approximate_gelu(fast) == layers
    ops = [n.op_type for n in fast.graph.node]
    assert ops.count("FastGelu") == layers and "Erf" not in ops
    ids, mask = batch([9, 4, 2], 9)
    exact, approximate = run(original, ids, mask), run(fast, ids, mask)
    assert 0 < np.abs(exact - approximate).max() < 1e-3
    assert approximate_gelu(fast) == 0


def test_graphs_with_control_flow_are_left_as_they_are():
    branch = helper.make_graph(
        [helper.make_node("Identity", ["scores"], ["picked"])],
        "branch",
        [],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [1, 4, 4])],
    )
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "x"], ["scores"]),
        helper.make_node("Add", ["scores", "mask_f"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["y"], axis=-1),
        helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=branch),
    ]
    graph = helper.make_graph(
        nodes,
        "with_if",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 4]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    assert drop_padding_mask(model) == 0 and approximate_gelu(model) == 0
    assert model.SerializeToString() == before
