"""One calibration forward: data-driven quantizer inits see real data before training or convert."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def calibrate(prepared: ModuleT, example_inputs: Any) -> ModuleT:
    """Run ``prepared`` once on ``example_inputs`` without gradients, in eval mode, and return it.

    Activation quantizers that start from the first batch they see (the
    default for thresholds, LSQ and ASQ) take their ranges from this batch;
    BatchNorm statistics are left alone and the train/eval mode is restored.
    Training does the same on its first batch, so call this only to convert or
    evaluate a prepared model before it has trained. Use representative data:
    the ranges come from it.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    was_training = prepared.training
    prepared.eval()
    try:
        with torch.no_grad():
            prepared(*inputs)
    finally:
        prepared.train(was_training)
    return prepared


__all__ = ["calibrate"]
