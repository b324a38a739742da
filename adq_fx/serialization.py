"""Load a converted model from its state_dict and quantization_map, without the trained model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .mapping import qconfig_mapping_from_map
from .passes import calibrate, convert_adq, prepare_adq


def load_converted(
    float_model: nn.Module,
    state_dict: Mapping[str, Tensor],
    quantization_map: Mapping[str, Mapping[str, Any]],
    example_inputs: Any,
    **convert_options: Any,
) -> nn.Module:
    """Rebuild the converted model that saved ``state_dict`` and load it.

    ``float_model`` only gives the architecture (its weights are replaced);
    ``quantization_map`` is what :func:`adq_fx.quantization_map` returned for the
    saved model; ``convert_options`` (``backend``, ``fold_batchnorm``, ...) must
    match the ones it was converted with. The calibration forward on
    ``example_inputs`` only fills placeholder ranges, which the state_dict overwrites.
    """
    prepared = calibrate(
        prepare_adq(float_model, qconfig_mapping_from_map(quantization_map), example_inputs), example_inputs
    )
    converted = convert_adq(prepared, **convert_options)
    if "fold_float_batchnorm" not in convert_options and _has_unfolded_float_batchnorm(
        state_dict, converted, prepared
    ):  # saved by an adq_fx that kept it apart: rebuild that layout
        converted = convert_adq(prepared, **convert_options, fold_float_batchnorm=False)
    converted.load_state_dict(state_dict)
    return converted


def _has_unfolded_float_batchnorm(
    state_dict: Mapping[str, Tensor], converted: nn.Module, prepared: nn.Module
) -> bool:
    """Whether ``state_dict`` holds a BatchNorm2d that ``converted`` folded into a float conv."""
    batchnorms = {name for name, m in prepared.named_modules() if isinstance(m, nn.BatchNorm2d)}
    present = set(converted.state_dict())
    return any(key.rpartition(".")[0] in batchnorms for key in set(state_dict) - present)


__all__ = ["load_converted"]
