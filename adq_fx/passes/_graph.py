"""Small torch.fx helpers shared by the passes."""

from __future__ import annotations

import torch
from torch import fx, nn

from ..int8.modules import Int8Conv2d, Int8Linear
from ..nn import LUT_MODULES
from ..quantizers import ActivationQuantizer
from ..registry import encoder_types

QAT_TYPES = tuple(LUT_MODULES)  # the QAT layer classes
PREPARED_TYPES = (*QAT_TYPES, ActivationQuantizer)


def converted_types() -> tuple[type[nn.Module], ...]:
    """Modules only a converted model holds: LUT and int8 layers, every registered encoder."""
    return (*{*LUT_MODULES.values()}, Int8Conv2d, Int8Linear, *encoder_types())


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (a GraphModule is used as it is)."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ...
        raise TypeError(
            f"torch.fx cannot trace {type(model).__name__}: {type(err).__name__}: {err}. "
            "Make the data-dependent part a leaf module (a custom fx.Tracer with "
            "is_leaf_module), or trace the model yourself with concrete_args and pass "
            "the GraphModule to prepare_adq."
        ) from err


def set_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    """Replace (or add) the submodule at a dotted path."""
    parent_name, _, child = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, child, module)


def free_target(gm: fx.GraphModule, wanted: str) -> str:
    """``wanted`` if no submodule or attribute has that path yet, else with a numeric suffix."""
    candidate, suffix = wanted, 0
    while _exists(gm, candidate):
        suffix += 1
        candidate = f"{wanted}_{suffix}"
    return candidate


def _exists(gm: fx.GraphModule, target: str) -> bool:
    obj: object = gm
    for part in target.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def modules_of_types(model: nn.Module, types: tuple[type, ...]) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, types)]


def call_counts(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


FUNCTIONAL_LAYERS = {torch.nn.functional.conv2d, torch.nn.functional.linear, torch.conv2d}
