"""Rewrites of an exported tower graph (ONNX ``ModelProto``) that ONNX Runtime does not make itself.

- :func:`drop_padding_mask`: the graph for inputs without padding. An additive attention mask is
  all zeros when every token is real, so the ``Add`` of the mask before each softmax (a pass over
  batch x heads x length x length values) and the mask's construction
  can go. Exact for unpadded input; the runner sends only such slices to this graph.
- :func:`approximate_gelu`: GELU written as ``0.5 * x * (1 + erf(x / sqrt 2))`` becomes ONNX
  Runtime's ``FastGelu`` (the tanh form, at most 4.7e-4 from the exact value). Used for the int8
  graph only, whose weights are approximate anyway; float32 graphs
  keep the exact function.

Both match the graph's structure, not node names, and report how many places they changed (0 when
the graph has no such pattern, which leaves it as it was). Graphs with control flow (subgraphs, which
can read outer values unseen by these passes) are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["approximate_gelu", "drop_padding_mask"]

_MASK_INPUT = "attention_mask"
_SHAPE_ONLY = {"Shape", "Size"}  # their outputs carry a tensor's shape, not its values
_PRODUCTS = {"MatMul", "Gemm", "MatMulInteger", "FusedMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}


def drop_padding_mask(model: Any) -> int:
    """Bypass each mask ``Add`` in front of a ``Softmax``; return how many were removed.

    The mask operand is recognised by what its values come from: the ``attention_mask`` input and
    nothing else but shapes and scalars. The other operand must come from a matrix product (the
    scores). An added bias with learned values (relative positions) is therefore never dropped.
    """
    graph = model.graph
    if _has_subgraphs(graph):
        return 0
    weights = {init.name for init in graph.initializer if int(np.prod(init.dims)) > 1}
    # value name -> (comes from the mask input, comes from anything else that varies); ONNX lists
    # nodes in topological order, so one pass sees every node's inputs before the node
    origin: dict[str, tuple[bool, bool]] = {i.name: (i.name == _MASK_INPUT, i.name != _MASK_INPUT) for i in graph.input}
    origin |= {name: (False, True) for name in weights}
    for node in graph.node:
        if node.op_type in _SHAPE_ONLY:
            found = (False, False)
        else:
            parents = [origin.get(i, (False, False)) for i in node.input if i]
            found = (any(m for m, _ in parents), node.op_type in _PRODUCTS or any(o for _, o in parents))
        origin |= dict.fromkeys(node.output, found)

    consumers = _consumers(graph.node)
    bypass: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(user.op_type != "Softmax" for user in users):
            continue
        kinds = [origin.get(i, (False, False)) for i in node.input]
        masks = [i for i, (mask, other) in enumerate(kinds) if mask and not other]
        if len(masks) == 1 and kinds[1 - masks[0]][1]:
            bypass[node.output[0]] = node.input[1 - masks[0]]
    if not bypass:
        return 0
    kept = [node for node in graph.node if not (node.op_type == "Add" and node.output[0] in bypass)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in bypass:
                node.input[i] = bypass[name]
    _replace_nodes(graph, _without_dead_nodes(kept, {o.name for o in graph.output}))
    return len(bypass)


def approximate_gelu(model: Any) -> int:
    """Replace each exact erf GELU by ``com.microsoft.FastGelu``; return how many were replaced."""
    from onnx import helper

    graph = model.graph
    if _has_subgraphs(graph):
        return 0
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph.node)
    constants = _constants(graph)
    replaced: set[str] = set()
    added: dict[str, Any] = {}  # output of each chain's last node -> its FastGelu
    for erf in graph.node:
        if erf.op_type != "Erf":
            continue
        chain = _erf_gelu_chain(erf, producers, consumers, constants)
        if chain is None:
            continue
        x, chain_nodes, output = chain
        replaced.update(n.output[0] for n in chain_nodes)
        added[output] = helper.make_node("FastGelu", [x], [output], name=f"{erf.name}/FastGelu", domain="com.microsoft")
    if not added:
        return 0
    nodes = []
    for node in graph.node:  # each FastGelu takes the place of its chain's last node: order stays valid
        if node.output[0] in added:
            nodes.append(added[node.output[0]])
        elif node.output[0] not in replaced:
            nodes.append(node)
    _replace_nodes(graph, _without_dead_nodes(nodes, {o.name for o in graph.output}))
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(added)


def _erf_gelu_chain(erf, producers, consumers, constants):
    """Match Div(x, sqrt 2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5) (either operand order)."""
    divide = producers.get(erf.input[0])
    if divide is None or divide.op_type != "Div" or not _is(constants, divide.input[1], np.sqrt(2.0)):
        return None
    x = divide.input[0]
    chain = [divide, erf]
    plus = _only_consumer(consumers, erf.output[0], "Add")
    if plus is None or not _is(constants, _other(plus, erf.output[0]), 1.0):
        return None
    times_x = _only_consumer(consumers, plus.output[0], "Mul")
    if times_x is None or _other(times_x, plus.output[0]) != x:
        return None
    half = _only_consumer(consumers, times_x.output[0], "Mul")
    if half is None or not _is(constants, _other(half, times_x.output[0]), 0.5):
        return None
    chain += [plus, times_x, half]
    return x, chain, half.output[0]


def _has_subgraphs(graph) -> bool:
    from onnx import AttributeProto

    kinds = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
    return any(attribute.type in kinds for node in graph.node for attribute in node.attribute)


def _consumers(nodes: Iterable[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _only_consumer(consumers, name: str, op_type: str):
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _other(node, name: str) -> str | None:
    others = [i for i in node.input if i != name]
    return others[0] if len(others) == 1 else None


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attribute.t)
    return found


def _is(constants, name: str | None, value: float) -> bool:
    array = constants.get(name) if name else None
    return array is not None and array.size == 1 and abs(float(array.reshape(-1)[0]) - value) < 1e-4


def _without_dead_nodes(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """Drop nodes none of whose outputs is used, repeatedly (what a bypass leaves behind)."""
    while True:
        used = outputs | {name for node in nodes for name in node.input}
        alive = [node for node in nodes if any(out in used for out in node.output)]
        if len(alive) == len(nodes):
            return nodes
        nodes = alive


def _replace_nodes(graph, nodes: list[Any]) -> None:
    kept = [_copy(node) for node in nodes]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)


def _copy(node):
    duplicate = type(node)()
    duplicate.CopyFrom(node)
    return duplicate
