"""What a prepared or converted model holds: commitment loss, quantization map, size."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, fx, nn

from .nn import QATConv2d, QATLinear
from .nn.lut import _LUTLayer, encoder_for
from .quantizers import ActivationQuantizer, WeightQuantizer


def _qat_layers(model: nn.Module) -> list[tuple[str, QATConv2d | QATLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (QATConv2d, QATLinear))]


def commitment_loss(prepared: nn.Module) -> Tensor:
    """Sum over QAT layers of eq. (3); add it to the task loss each step."""
    layers = _qat_layers(prepared)
    if not layers:
        raise ValueError(
            f"commitment_loss: {type(prepared).__name__} has no adq_fx QAT layer; "
            "call prepare_adq first."
        )
    return torch.stack([m.weight_quantizer.commitment(m.weight) for _, m in layers]).sum()


def _input_quantizers(model: nn.Module) -> dict[str, ActivationQuantizer]:
    """Layer name -> the quantizer module on its input, read off the graph."""
    if not isinstance(model, fx.GraphModule):
        return {}
    modules = dict(model.named_modules())
    found = {}
    for node in model.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), (QATConv2d, QATLinear)):
            source = node.args[0]
            quantizer = modules.get(source.target) if isinstance(source, fx.Node) else None
            if isinstance(quantizer, ActivationQuantizer):
                found[node.target] = quantizer
    return found


def quantization_map(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per quantized layer, keyed by the original module name: what to save beside a checkpoint."""
    result: dict[str, dict[str, Any]] = {}
    inputs = _input_quantizers(model)
    for name, module in model.named_modules():
        if isinstance(module, (QATConv2d, QATLinear)):
            quantizer = module.weight_quantizer
            act = inputs.get(name)
            result[name] = {
                "stage": "prepared",
                "layer_type": type(module).__bases__[0].__name__,
                "weight_bits": quantizer.config.bits,
                "activation_bits": None if act is None else act.config.bits,
                "activation_signed": None if act is None else act.signed,
                "weight_method": quantizer.config.method,
                "activation_method": None if act is None else act.config.method,
                "codebook": quantizer.levels().tolist(),
                "scale_shape": [module.weight.shape[0]],
                "num_params": module.weight.numel(),
                "weight_config": asdict(quantizer.config),
                "activation_config": None if act is None else asdict(act.config),
            }
        elif isinstance(module, _LUTLayer):
            result[name] = {
                "stage": "converted",
                "layer_type": type(module).__name__.removeprefix("LUT"),
                "weight_bits": module.weight_bits,
                "activation_bits": module.act_bits,
                "activation_signed": module.act_signed,
                "weight_method": module.weight_config.method,
                "activation_method": module.activation_config.method,
                "codebook": module.codebook.tolist(),
                "scale_shape": list(module.weight_scale.shape),
                "num_params": module.weight_codes.numel(),
                "weight_config": asdict(module.weight_config),
                "activation_config": asdict(module.activation_config),
            }
    if not result:
        raise ValueError(
            f"quantization_map: {type(model).__name__} has no quantized layer; "
            "pass a model returned by prepare_adq or convert_adq."
        )
    return result


def model_size_bits(model: nn.Module) -> int:
    """Storage of the deployed model in bits: b bits per quantized weight, packed, plus
    codebooks, scales and every other parameter or buffer at its own width.

    Training-only state (EMA statistics, quantizer parameters) is not counted:
    it does not ship. BatchNorm running statistics are counted (they ship until folded).
    """
    total = 0
    skip: set[int] = set()
    for module in model.modules():
        if isinstance(module, (QATConv2d, QATLinear)):
            q = module.weight_quantizer
            table = q.levels().numel() + module.weight.shape[0]  # level table and per-channel scale
            total += module.weight.numel() * q.config.bits + 32 * table
            skip.add(id(module.weight))
        elif isinstance(module, _LUTLayer):
            total += module.weight_codes.numel() * module.weight_bits
            skip.add(id(module.weight_codes))
        elif isinstance(module, ActivationQuantizer):
            # Exactly what convert_adq will ship for it: the encoder and the input level table.
            encoder = encoder_for(module)
            shipped = [*encoder.parameters(), *encoder.buffers(), module.level_table()]
            total += sum(t.numel() * t.element_size() * 8 for t in shipped)
        if isinstance(module, (WeightQuantizer, ActivationQuantizer)):
            skip.update(id(t) for t in (*module.parameters(), *module.buffers()))
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in skip:
            total += tensor.numel() * tensor.element_size() * 8
    return total
