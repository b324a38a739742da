"""convert_adq: fold each QAT layer and its input quantizer into lookup-table modules."""

from __future__ import annotations

import copy
import warnings
from typing import Literal, cast, get_args

import torch
from torch import fx, nn

from ..int8 import onednn
from ..nn import LUT_MODULES, encoder_for
from ..quantizers import ActivationQuantizer
from ..quantizers.first_batch import FirstBatchInit
from ._graph import PREPARED_TYPES, QAT_TYPES, modules_of_types, set_submodule
from .fold_float import fold_float_batchnorm as fold_float_conv_batchnorm
from .lower_int8 import lower_to_int8

Backend = Literal["auto", "int8", "reference"]
OffGrid = Literal["snap", "exact"]
_warned_fallback = False


def convert_adq(
    prepared: fx.GraphModule,
    *,
    backend: Backend = "auto",
    fold_batchnorm: bool = True,
    fold_float_batchnorm: bool = True,
    off_grid: OffGrid = "snap",
) -> fx.GraphModule:
    """Return an inference copy (eval mode) of a prepared model with integer-coded layers.

    Each activation quantizer becomes an encoder (float -> uint8 codes). With
    ``backend="reference"`` each QAT layer becomes a LUT layer (uint8 weight codes,
    the level table, per-channel scale, input level table) computing exactly what
    ``prepared`` computes in eval mode, in float. With ``backend="int8"`` each becomes
    an ``Int8Conv2d``/``Int8Linear`` running oneDNN's integer kernels on packed codes,
    with a following BatchNorm folded in (``fold_batchnorm``; with
    ``fold_float_batchnorm`` too, the BatchNorm after a conv the mapping kept float,
    which earlier adq_fx versions kept apart) and a following residual
    add and ReLU fused; it raises where this PyTorch build or CPU has no such kernels.
    ``"auto"`` is int8 where available, else reference with a one-time warning.

    Level tables not on an int8 grid (learned codebooks, POST) are snapped to the
    nearest one (``off_grid="snap"``; each layer's error is in
    ``quantization_map``) or refused (``off_grid="exact"``). docs/design.md states
    which equality holds for each case. ``prepared`` is not changed.
    """
    global _warned_fallback
    if backend not in get_args(Backend):
        raise ValueError(f"convert_adq(backend={backend!r}) must be one of {get_args(Backend)}.")
    if off_grid not in get_args(OffGrid):
        raise ValueError(f"convert_adq(off_grid={off_grid!r}) must be one of {get_args(OffGrid)}.")
    if not isinstance(prepared, fx.GraphModule) or not modules_of_types(prepared, QAT_TYPES):
        raise ValueError(
            f"convert_adq: {type(prepared).__name__} has no adq_fx QAT layer; call "
            "prepare_adq(model, qconfig_mapping, example_inputs) and train before converting."
        )
    if backend == "int8":
        onednn.require_kernels("convert_adq(backend='int8')")
    elif backend == "auto" and onednn.kernel_problem() is not None:
        if not _warned_fallback:
            warnings.warn(
                f"convert_adq(backend='auto'): {onednn.kernel_problem()}, so the model "
                "converts to the exact float reference path.",
                stacklevel=2,
            )
            _warned_fallback = True
        backend = "reference"
    _check_finite(prepared)
    gm = copy.deepcopy(prepared)
    modules = dict(gm.named_modules())

    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if isinstance(module, ActivationQuantizer):
            _check_feeds_one_layer(node, modules)
            _check_initialized(node, module)
            continue
        if not isinstance(module, QAT_TYPES):
            continue
        quantizer_node = node.args[0] if node.args else None
        quantizer = modules.get(quantizer_node.target) if isinstance(quantizer_node, fx.Node) else None
        if not isinstance(quantizer, ActivationQuantizer):
            raise ValueError(
                f"convert_adq: QAT layer {node.target!r} is not fed by its input quantizer (its "
                "input is node {!r}); the graph was edited after prepare_adq. Prepare again.".format(
                    getattr(quantizer_node, "name", quantizer_node)
                )
            )
        assert isinstance(quantizer_node, fx.Node)  # it is the call of ``quantizer``
        set_submodule(gm, cast(str, quantizer_node.target), encoder_for(quantizer))
        # LUT_MODULES maps each QAT type to its own LUT type, a pairing its dict type cannot state.
        lut = LUT_MODULES[type(module)].from_qat(module, quantizer)  # type: ignore[arg-type]
        set_submodule(gm, node.target, lut)

    gm.delete_all_unused_submodules()
    residue = modules_of_types(gm, PREPARED_TYPES)
    if residue:
        raise ValueError(f"convert_adq: {residue} could not be converted; this is a bug, please report it.")
    gm.graph.lint()
    gm.recompile()
    gm.eval()
    if backend != "reference":
        lower_to_int8(gm, fold_batchnorm=fold_batchnorm, off_grid=off_grid, strict=backend == "int8")
        if fold_batchnorm and fold_float_batchnorm:
            fold_float_conv_batchnorm(gm)
    return gm.eval()


def _check_finite(prepared: fx.GraphModule) -> None:
    """NaN or inf in a parameter or buffer (a diverged run) would convert without complaint and
    predict garbage on every backend, so it is refused here, naming the tensor."""
    state = [*prepared.named_parameters(), *prepared.named_buffers()]
    for name, tensor in state:
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"convert_adq: {name!r} holds {bad} non-finite value(s) of {tensor.numel()} (NaN or "
                "inf): training diverged. Convert a checkpoint saved before it did, or retrain at a "
                "lower lr."
            )


def _check_initialized(node: fx.Node, quantizer: ActivationQuantizer) -> None:
    """A quantizer with a first-batch init that saw no batch would convert with its placeholder scales."""
    if isinstance(quantizer, FirstBatchInit) and quantizer.awaiting_first_batch:
        raise ValueError(
            f"convert_adq: input quantizer {node.target!r} ({type(quantizer).__name__}) sets its scale "
            "from the first batch it sees and has seen none; train it first, or run one calibration "
            "forward on representative data (adq_fx.calibrate(prepared, example_inputs)) before converting."
        )


def _check_feeds_one_layer(node: fx.Node, modules: dict[str, nn.Module]) -> None:
    users = list(node.users)
    if (
        len(users) != 1
        or users[0].op != "call_module"
        or not isinstance(modules[cast(str, users[0].target)], QAT_TYPES)
    ):
        raise ValueError(
            f"convert_adq: input quantizer {node.target!r} feeds {[u.name for u in users]} instead of "
            "exactly one QAT layer; the graph was edited after prepare_adq. Prepare again."
        )
