"""What every weight and activation quantizer offers the passes, whatever its method.

Weight quantizers reconstruct a weight as ``scale[c] * levels[code]``: that one
form covers ADQ codebooks, N2UQ's uniform levels and LSQ's integer grid, so a
single lookup-table layer serves all of them. Activation quantizers map a float
to a code in 0..2^b-1 and back through a small table of output values.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from .checkpoint_layout import CheckedLayout


class WeightQuantizer(CheckedLayout):
    """Forward returns the quantized weight; ``codes``, ``levels`` and ``channel_scale`` give
    the (code, level table, per-output-channel scale) triple the converted layer stores.

    ``quantize(weight)`` returns the quantized weight and this forward's eq. (3)
    term together, so the QAT layer hands the commitment to ``commitment_loss``
    explicitly (also under torch.compile); ``commitment(weight)`` computes it afresh.
    """

    config: Any
    parameter_kinds: ClassVar[dict[str, str]] = {}  # parameter name -> adq_fx.optim.RECIPES kind

    def codes(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def levels(self) -> Tensor:
        raise NotImplementedError

    def channel_scale(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def quantize(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(quantized weight, this forward's commitment term): zero for methods without one."""
        return self(weight), weight.new_zeros(())

    def commitment(self, weight: Tensor) -> Tensor:
        """Eq. (3) for ADQ, computed afresh; methods without one contribute zero."""
        return weight.new_zeros(())

    def layout(self) -> dict[str, Any]:
        return {"method": self.config.method, "bits": self.config.bits, "levels": self.levels().numel()}


class ActivationQuantizer(CheckedLayout):
    """Forward returns the quantized activation; ``level_table`` gives the output value of each
    code, (2^b,) or (channels, 2^b) when a signed input has a per-channel shift."""

    config: Any
    signed: bool
    channel_dim: int
    parameter_kinds: ClassVar[dict[str, str]] = {}  # parameter name -> adq_fx.optim.RECIPES kind

    def level_table(self) -> Tensor:
        raise NotImplementedError

    def layout(self) -> dict[str, Any]:
        return {"method": self.config.method, "bits": self.config.bits, "signed": self.signed}

    def extra_repr(self) -> str:
        return f"bits={self.config.bits}, signed={self.signed}"


def as_float(x: Tensor, reference: Tensor) -> Tensor:
    """Quantizers compare in the dtype of their parameters (fp32), also under bf16 autocast."""
    return x if x.dtype == reference.dtype else x.to(reference.dtype)


__all__ = ["ActivationQuantizer", "WeightQuantizer", "as_float"]
