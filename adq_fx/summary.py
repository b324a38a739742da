"""What a prepared or converted model holds: commitment loss, quantization map, size."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, fx, nn

from .int8.modules import _Int8Layer
from .nn import QATConv2d, QATLinear
from .nn.encoders import encoder_for
from .nn.lut import _LUTLayer
from .quantizers import ActivationQuantizer, WeightQuantizer


def _qat_layers(model: nn.Module) -> list[tuple[str, QATConv2d | QATLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (QATConv2d, QATLinear))]


def commitment_loss(prepared: nn.Module) -> Tensor:
    """Sum over QAT layers of eq. (3); add it to the task loss each step.

    Each layer's term is the one its last training forward returned (same
    assignment, no second search; taken once); a layer without one, e.g. before
    any training forward or on a second call, computes it afresh.
    """
    layers = _qat_layers(prepared)
    if not layers:
        raise ValueError(
            f"commitment_loss: {type(prepared).__name__} has no adq_fx QAT layer; call prepare_adq first."
        )
    terms = []
    for _, layer in layers:
        term = layer.take_commitment()
        terms.append(layer.weight_quantizer.commitment(layer.weight) if term is None else term)
    return torch.stack(terms).sum()


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
                "layer_type": type(module).__name__.removeprefix("QAT"),
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
        elif isinstance(module, _Int8Layer):
            result[name] = {
                "stage": "converted",
                "backend": "int8",
                "layer_type": type(module).__name__.removeprefix("Int8"),
                "weight_bits": module.weight_bits,
                "activation_bits": module.act_bits,
                "activation_signed": module.act_signed,
                "weight_method": module.weight_config.method,
                "activation_method": module.activation_config.method,
                "int8_levels": module.int8_levels.tolist(),
                "scale_shape": list(module.weight_scale.shape),
                "num_params": math.prod(module.weight_shape),
                "grid_exact": module.grid_exact,
                "grid_error": float(module.grid_error),
                "folded_batchnorm": module.folded_batchnorm,
                "fused": {"add": module.accumulates, "relu": module.relu},
                "weight_config": asdict(module.weight_config),
                "activation_config": asdict(module.activation_config),
            }
    if not result:
        raise ValueError(
            f"quantization_map: {type(model).__name__} has no quantized layer; "
            "pass a model returned by prepare_adq or convert_adq."
        )
    return result


def _tensor_bits(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() * 8 for t in tensors)


def _layer_inputs(model: nn.Module) -> dict[str, nn.Module]:
    """Layer name -> the module on its input (quantizer or encoder), read off the graph."""
    if not isinstance(model, fx.GraphModule):
        return {}
    modules = dict(model.named_modules())
    found = {}
    for node in model.graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if isinstance(source, fx.Node) and source.op == "call_module":
            found[node.target] = modules[source.target]
    return found


def model_size(model: nn.Module) -> dict[str, Any]:
    """What ``model`` takes to ship: total bytes, and the cost of its quantized layers per weight.

    ``bits_per_weight`` divides everything a quantized layer ships (weight codes at their
    packed width, its level table, per-channel scales, bias, and its input encoder's
    thresholds or step) by its weight count; ``weight_bits`` is the parameter-weighted mean
    code width, the figure that ``bits_per_weight`` approaches on large layers. For a float
    model every Conv2d and Linear counts as a layer (32 bits a weight, plus biases). Training
    state (EMA statistics, quantizer parameters) does not ship and is not counted; BatchNorm
    is counted where it is not folded.
    """
    quantized = (QATConv2d, QATLinear, _LUTLayer, _Int8Layer)
    has_quantized = any(isinstance(m, quantized) for m in model.modules())
    inputs = _layer_inputs(model)
    counted: set[int] = set()
    layer_bits = weights = code_bits = layers = 0
    for name, module in model.named_modules():
        encoder = inputs.get(name)
        shipped: list[Tensor] = []
        if isinstance(module, (QATConv2d, QATLinear)):
            q = module.weight_quantizer
            count, bits = module.weight.numel(), q.config.bits
            layer = count * bits + 32 * (q.levels().numel() + module.weight.shape[0])
            shipped = [] if module.bias is None else [module.bias]
            if isinstance(encoder, ActivationQuantizer):  # what convert_adq will ship for it
                shipped_encoder = encoder_for(encoder)
                shipped += [*shipped_encoder.parameters(), *shipped_encoder.buffers(), encoder.level_table()]
            counted.update(
                id(t)
                for t in (
                    module.weight,
                    *module.weight_quantizer.parameters(),
                    *module.weight_quantizer.buffers(),
                )
            )
        elif isinstance(module, _LUTLayer):
            count, bits = module.weight_codes.numel(), module.weight_bits
            layer = count * bits
            counted.add(id(module.weight_codes))
            shipped = [t for t in module.buffers() if t is not module.weight_codes]
        elif isinstance(module, _Int8Layer):
            count, bits = math.prod(module.weight_shape), module.weight_bits
            layer = 0
            shipped = list(module.buffers())  # packed codes at their width, tables, scales, bias
        elif not has_quantized and type(module) in (nn.Conv2d, nn.Linear):
            count, bits, layer = module.weight.numel(), 32, 0
            shipped = [*module.parameters(recurse=False)]
        else:
            continue
        if encoder is not None and not isinstance(encoder, ActivationQuantizer):
            shipped += [*encoder.parameters(), *encoder.buffers()]
        layer += _tensor_bits(shipped)
        counted.update(id(t) for t in shipped)
        if encoder is not None:
            counted.update(id(t) for t in (*encoder.parameters(), *encoder.buffers()))
        layer_bits, weights, layers = layer_bits + layer, weights + count, layers + 1
        code_bits += count * bits
    for module in model.modules():  # training-only quantizer state never ships
        if isinstance(module, (WeightQuantizer, ActivationQuantizer)):
            counted.update(id(t) for t in (*module.parameters(), *module.buffers()))
    rest = _tensor_bits(
        [
            t
            for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
            if id(t) not in counted
        ]
    )
    total = layer_bits + rest
    return {
        "total_bytes": math.ceil(total / 8),
        "total_bits": total,
        "layers": layers,
        "weights": weights,
        "bits_per_weight": layer_bits / weights if weights else float("nan"),
        "weight_bits": code_bits / weights if weights else float("nan"),
    }


def model_size_bits(model: nn.Module) -> int:
    """Storage of the deployed model in bits (``model_size(model)["total_bits"]``)."""
    return model_size(model)["total_bits"]
