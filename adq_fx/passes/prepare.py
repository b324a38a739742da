"""prepare_adq: trace, then swap Conv2d/Linear for QAT layers and insert input quantizers."""

from __future__ import annotations

import copy
import warnings
from typing import Any, cast

import torch
from torch import Tensor, fx, nn

from ..config import ADQConfig
from ..mapping import ADQConfigMapping, LayerSite, default_qconfig_mapping
from ..nn import LUT_MODULES, QAT_MODULES
from ..nn.qat import input_channel_dim, input_channels
from ..quantizers import build_activation_quantizer
from ._graph import (
    FUNCTIONAL_LAYERS,
    PREPARED_TYPES,
    call_counts,
    converted_types,
    free_target,
    modules_of_types,
    set_submodule,
    trace,
)
from .signs import example_minimum, graph_nonnegative

INPUT_QUANTIZER_SUFFIX = "_input_quantizer"


def prepare_adq(
    model: nn.Module,
    qconfig_mapping: ADQConfigMapping | None,
    example_inputs: Tensor | tuple[Any, ...],
) -> fx.GraphModule:
    """Trace ``model`` and return a copy ready for quantization-aware training.

    As torch.ao's ``prepare_fx``, all three are required (``qconfig_mapping=None``
    means ``default_qconfig_mapping()``). Every Conv2d/Linear the mapping gives a
    config becomes a QAT subclass with its weight quantizer, and its activation
    quantizer node is put on its input. ``example_inputs`` (a tensor or a tuple of
    positional arguments) are run once to tell signed from unsigned layer inputs
    where the graph cannot. The input model is not changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare_adq expects an nn.Module, got {type(model).__name__}.")
    already = modules_of_types(model, (*PREPARED_TYPES, *converted_types()))
    if already:
        raise ValueError(
            f"prepare_adq: the model is already prepared or converted ({already[0]!r} is an adq_fx "
            "module). Prepare the float model once; to resume, prepare the float model again and "
            "load the prepared state_dict."
        )
    if example_inputs is None:
        raise ValueError("prepare_adq needs example_inputs, e.g. (torch.randn(1, 3, 32, 32),).")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    mapping = default_qconfig_mapping() if qconfig_mapping is None else qconfig_mapping
    if not isinstance(mapping, ADQConfigMapping):
        raise TypeError(
            f"qconfig_mapping must be an adq_fx.ADQConfigMapping, got {type(mapping).__name__}; "
            "build one with adq_fx.default_qconfig_mapping() or ADQConfigMapping().set_global(...)."
        )

    gm = trace(copy.deepcopy(model))
    configs = _resolve_configs(gm, mapping)
    _check_finite_weights(gm, configs)
    signs = _decide_signs(gm, configs, example_inputs)
    modules = dict(gm.named_modules())

    for node in list(gm.graph.nodes):
        config = configs.get(node)
        if config is None:
            continue
        float_layer = modules[node.target]
        if not node.args or not isinstance(node.args[0], fx.Node):
            raise ValueError(
                f"prepare_adq: node {node.name!r} ({node.target}) gets its input as a keyword "
                "or constant; call the layer with its input as the first positional argument."
            )
        quantizer = build_activation_quantizer(
            config.activation,
            signed=signs[node],
            num_channels=input_channels(float_layer),
            channel_dim=input_channel_dim(float_layer),
        ).to(float_layer.weight.device)
        quantizer_target = free_target(gm, node.target + INPUT_QUANTIZER_SUFFIX)
        gm.add_submodule(quantizer_target, quantizer)
        with gm.graph.inserting_before(node):
            quantized_input = gm.graph.call_module(quantizer_target, (node.args[0],))
        node.args = (quantized_input, *node.args[1:])
        set_submodule(gm, node.target, QAT_MODULES[type(float_layer)].from_float(float_layer, config.weight))

    _warn_left_float(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def _resolve_configs(gm: fx.GraphModule, mapping: ADQConfigMapping) -> dict[fx.Node, ADQConfig | None]:
    """Config per quantizable call site, and refusal of sites prepare cannot handle."""
    modules = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and type(modules[n.target]) in QAT_MODULES]
    if not nodes:
        raise ValueError(
            f"prepare_adq: {type(gm).__name__} has no nn.Conv2d or nn.Linear call in its traced "
            "graph; nothing to quantize."
        )
    convs = [n for n in nodes if isinstance(modules[n.target], nn.Conv2d)]
    linears = [n for n in nodes if isinstance(modules[n.target], nn.Linear)]
    sites = {
        n: LayerSite(
            name=n.target,
            module_type=type(modules[n.target]),
            is_first_conv=bool(convs) and n is convs[0],
            is_last_linear=bool(linears) and n is linears[-1],
        )
        for n in nodes
    }
    mapping.check_all_entries_used(list(sites.values()), set(modules))
    configs = {n: mapping.config_for(site) for n, site in sites.items()}
    counts = call_counts(gm)
    for n, config in configs.items():
        if config is not None and counts[n.target] > 1:
            raise ValueError(
                f"prepare_adq: module {n.target!r} is called {counts[n.target]} times in the graph; "
                "a quantized layer needs one call site (its input quantizer is per call). Use a "
                "separate module per call, or keep it float with set_module_name(name, None)."
            )
    return configs


def _check_finite_weights(gm: fx.GraphModule, configs: dict[fx.Node, ADQConfig | None]) -> None:
    for node, config in configs.items():
        if config is None:
            continue
        weight = cast(Tensor, gm.get_submodule(cast(str, node.target)).weight)
        if not torch.isfinite(weight).all():
            raise ValueError(
                f"prepare_adq: {node.target}.weight contains NaN or Inf; the codebook is built "
                "from the weights. Fix or re-initialise that layer before preparing."
            )
        quantile_init = getattr(config.weight, "init", None) == "quantile"
        if not weight.detach().abs().sum() > 0 and quantile_init:
            raise ValueError(
                f"prepare_adq: {node.target}.weight is all zeros, so it has no distribution to "
                "build a quantile codebook from; load the pre-trained weights first, or use "
                "CodebookWeightConfig(init='normal')."
            )


def _decide_signs(
    gm: fx.GraphModule, configs: dict[fx.Node, ADQConfig | None], example_inputs: tuple[Any, ...]
) -> dict[fx.Node, bool]:
    """Signed input? The config if it says; else the graph if it proves >= 0; else the examples."""
    proven = graph_nonnegative(gm)
    undecided = {
        node.args[0]
        for node, config in configs.items()
        if config is not None
        and config.activation.signed is None
        and node.args
        and isinstance(node.args[0], fx.Node)
        and node.args[0] not in proven
    }
    # Always run the examples: it also checks that they fit the model.
    minimum = example_minimum(gm, undecided, example_inputs)
    signs: dict[fx.Node, bool] = {}
    for node, config in configs.items():
        if config is None:
            continue
        source = node.args[0] if node.args else None
        if config.activation.signed is not None:
            signs[node] = config.activation.signed
        else:
            signs[node] = (
                source not in proven and isinstance(source, fx.Node) and minimum.get(source, 0.0) < 0.0
            )
    return signs


def _warn_left_float(gm: fx.GraphModule) -> None:
    """Say which conv/linear computations prepare could not quantize, instead of skipping them."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in FUNCTIONAL_LAYERS:
            stack = node.meta.get("nn_module_stack") or {}
            inside = f" inside {next(reversed(stack.values()))[0]!r}" if stack else ""
            warnings.warn(
                f"prepare_adq: node {node.name!r}{inside} calls {node.target.__name__} directly and "
                "stays float; adq_fx quantizes plain nn.Conv2d/nn.Linear modules, so use one of those "
                "to quantize it.",
                stacklevel=3,
            )
        elif node.op == "call_module":
            module = modules[node.target]
            base = next((t for t in QAT_MODULES if isinstance(module, t)), None)
            if base is not None and type(module) is not base and type(module) not in LUT_MODULES:
                warnings.warn(
                    f"prepare_adq: {node.target!r} is a {type(module).__name__}, a subclass of "
                    f"nn.{base.__name__} with its own behaviour; adq_fx matches exact types, so it "
                    "stays float. Replace it with a plain layer to quantize it.",
                    stacklevel=3,
                )
