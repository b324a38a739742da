"""Can the input of a layer be negative? Decided from the graph, then the example inputs.

An unsigned input goes straight into the threshold quantizer; a signed one
gets a learnable shift in front (see ThresholdActivationQuantizer).
"""

from __future__ import annotations

import operator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

_NONNEGATIVE_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softmax, nn.Hardsigmoid)
_NONNEGATIVE_FUNCTIONS = {
    torch.relu,
    F.relu,
    F.relu6,
    torch.sigmoid,
    F.sigmoid,
    F.softmax,
    torch.softmax,
    torch.abs,
    F.hardsigmoid,
}
_NONNEGATIVE_METHODS = {"relu", "sigmoid", "softmax", "abs"}
# These keep a non-negative input non-negative (all their tensor inputs must be).
_PRESERVING_MODULES = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
    nn.Upsample,
)
_PRESERVING_FUNCTIONS = {
    torch.flatten,
    torch.cat,
    torch.add,
    torch.mul,
    operator.add,
    operator.mul,
    operator.getitem,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.dropout,
    F.interpolate,
    torch.max_pool2d,
}
_PRESERVING_METHODS = {
    "flatten",
    "view",
    "reshape",
    "contiguous",
    "permute",
    "transpose",
    "add",
    "mul",
    "mean",
    "max",
    "squeeze",
    "unsqueeze",
    "__getitem__",
    "to",
}


def graph_nonnegative(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value the graph proves non-negative (one pass in topological order)."""
    modules = dict(gm.named_modules())
    proven: set[fx.Node] = set()
    for node in gm.graph.nodes:
        makes, keeps = _op_kind(node, modules)
        inputs = node.all_input_nodes
        if makes or (keeps and inputs and all(arg in proven for arg in inputs)):
            proven.add(node)
    return proven


def _op_kind(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, bool]:
    """(always non-negative, keeps non-negative inputs non-negative) for one node."""
    if node.op == "call_module":
        module = modules[cast(str, node.target)]
        return isinstance(module, _NONNEGATIVE_MODULES), isinstance(module, _PRESERVING_MODULES)
    if node.op == "call_function":
        return node.target in _NONNEGATIVE_FUNCTIONS, node.target in _PRESERVING_FUNCTIONS
    if node.op == "call_method":
        return node.target in _NONNEGATIVE_METHODS, node.target in _PRESERVING_METHODS
    return False, False


class _MinimumRecorder(fx.Interpreter):
    """Runs the graph and records the minimum value of selected nodes."""

    def __init__(self, gm: fx.GraphModule, watched: set[fx.Node]) -> None:
        super().__init__(gm)
        self.watched = watched
        self.minimum: dict[fx.Node, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n in self.watched and isinstance(result, torch.Tensor) and result.numel():
            self.minimum[n] = float(result.detach().min())
        return result


def example_minimum(
    gm: fx.GraphModule, nodes: set[fx.Node], example_inputs: tuple[Any, ...]
) -> dict[fx.Node, float]:
    """Minimum of each node on the example inputs, run in eval mode without changing any state."""
    modes = {name: m.training for name, m in gm.named_modules()}
    gm.eval()
    try:
        _check_argument_count(gm, example_inputs)
        with torch.no_grad():
            recorder = _MinimumRecorder(gm, nodes)
            recorder.run(*example_inputs)
    except Exception as err:
        raise RuntimeError(
            f"prepare_adq could not run the model on example_inputs ({type(err).__name__}: {err}); "
            "pass inputs the model accepts, as a tuple of positional arguments."
        ) from err
    finally:
        for name, m in gm.named_modules():
            m.training = modes.get(name, m.training)
    return recorder.minimum


def _check_argument_count(gm: fx.GraphModule, example_inputs: tuple[Any, ...]) -> None:
    """fx.Interpreter drops surplus arguments silently; the model itself would not."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if any(str(n.target).startswith("*") for n in placeholders):
        return
    if len(example_inputs) > len(placeholders):
        raise TypeError(
            f"forward() takes {len(placeholders)} positional arguments but {len(example_inputs)} were given"
        )
