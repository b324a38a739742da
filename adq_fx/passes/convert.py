"""convert_adq: fold each QAT layer and its input quantizer into lookup-table modules."""

from __future__ import annotations

import copy

from torch import fx, nn

from ..nn import LUT_MODULES, encoder_for
from ..quantizers import ActivationQuantizer
from ..quantizers._state import FirstBatchInit
from ._graph import PREPARED_TYPES, QAT_TYPES, modules_of_types, set_submodule


def convert_adq(prepared: fx.GraphModule) -> fx.GraphModule:
    """Return an inference copy (eval mode) of a prepared model with integer-coded layers.

    Each activation quantizer becomes an encoder (float -> uint8 codes) and each
    QAT layer a LUT layer holding uint8 weight codes, the codebook (or level
    grid), the per-channel scale and the input level table. In eval mode the
    result computes the same values as ``prepared``, which is not changed.
    """
    if not isinstance(prepared, fx.GraphModule) or not modules_of_types(prepared, QAT_TYPES):
        raise ValueError(
            f"convert_adq: {type(prepared).__name__} has no adq_fx QAT layer; call "
            "prepare_adq(model, qconfig_mapping, example_inputs) and train before converting."
        )
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
                "input is node {!r}); the graph was edited after prepare_adq. Prepare again."
                .format(getattr(quantizer_node, "name", quantizer_node))
            )
        set_submodule(gm, quantizer_node.target, encoder_for(quantizer))
        set_submodule(gm, node.target, LUT_MODULES[type(module)].from_qat(module, quantizer))

    gm.delete_all_unused_submodules()
    residue = modules_of_types(gm, PREPARED_TYPES)
    if residue:
        raise ValueError(f"convert_adq: {residue} could not be converted; this is a bug, please report it.")
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def _check_initialized(node: fx.Node, quantizer: ActivationQuantizer) -> None:
    """A quantizer with a first-batch init that saw no batch would convert with its placeholder scales."""
    if isinstance(quantizer, FirstBatchInit) and quantizer.awaiting_first_batch:
        raise ValueError(
            f"convert_adq: input quantizer {node.target!r} ({type(quantizer).__name__}) sets its scale "
            "from the first batch it sees and has seen none; run the prepared model on data (train, "
            "or one calibration forward) before converting."
        )


def _check_feeds_one_layer(node: fx.Node, modules: dict[str, nn.Module]) -> None:
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module" or not isinstance(modules[users[0].target], QAT_TYPES):
        raise ValueError(
            f"convert_adq: input quantizer {node.target!r} feeds {[u.name for u in users]} instead of "
            "exactly one QAT layer; the graph was edited after prepare_adq. Prepare again."
        )
