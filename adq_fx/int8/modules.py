"""Integer inference layers: packed weight codes, int8 kernels, float scales at the edges.

An ``Int8Conv2d`` / ``Int8Linear`` replaces a reference lookup-table layer
(:mod:`adq_fx.nn.lut`) and takes the same input, the uint8 codes of its input
encoder. Its weight is ``weight_scale[o] * int8_levels[code]``: the layer's
level table put on an int8 grid (:mod:`adq_fx.int8.grid`), the grid step and
any folded BatchNorm gain inside the per-channel float scale. The codes are
stored packed at their bit-width; the kernel's blocked int8 weight is built
once, when the layer is made or loaded, never per forward.

The input codes' values are ``input_scale * (code - input_zero_point)``, plus a
per-channel ``input_offset`` for a signed threshold quantizer (its learned
shift), or times each sample's step for ASQ. The plain case (uniform codes) runs
bias, ReLU and a residual sum inside the kernel; the other two apply the step,
the offset's contribution, the bias and the post-ops in float after it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import broadcast_channels
from ..quantizers.checkpoint_layout import CheckedLayout
from . import onednn
from .grid import GRID_TOLERANCE, GridLevels, to_int8_grid, weight_limit
from .packing import pack_codes, unpack_codes


class UnsupportedLayer(ValueError):
    """A layer the int8 kernels cannot run (``backend="auto"`` keeps it on the reference path)."""


#: Relative tolerance for "the input level table is uniform" (fp32 round-off of scale * code).
_UNIFORM_TOLERANCE = 1e-5


def uniform_encoding(levels: Tensor, context: str) -> tuple[float, int, Tensor | None]:
    """(scale, zero point, per-channel offset or None) with ``levels[..., k] = scale * (k - zp) + offset``.

    ``levels`` is an input level table, (K,) or (C, K). Raises, naming ``context``, for a
    table that is not uniform in the code (no integer kernel takes such an input).
    """
    table = levels.detach().double()
    if not bool(torch.isfinite(table).all()):
        raise ValueError(
            f"{context}: its input levels are not finite ({table.flatten().tolist()[:4]}...): the "
            "activation quantizer before it diverged in training. Retrain with a lower learning rate."
        )
    rows = table.reshape(-1, table.shape[-1])
    count = rows.shape[1]
    scale = float((rows[:, -1] - rows[:, 0]).mean()) / (count - 1)
    codes = torch.arange(count, dtype=torch.float64)
    residual = rows - scale * codes  # the per-row value of code 0
    peak = float(table.abs().max())
    if scale <= 0 or float((residual - residual[:, :1]).abs().max()) > _UNIFORM_TOLERANCE * peak:
        raise UnsupportedLayer(
            f"{context}: its input codes do not map to evenly spaced values, so no integer kernel "
            "takes them; convert with backend='reference'."
        )
    start = residual[:, 0]
    if table.dim() == 1 or bool((start == start[0]).all()):
        zero_point = -float(start[0]) / scale
        if abs(zero_point - round(zero_point)) <= _UNIFORM_TOLERANCE and 0 <= round(zero_point) <= 255:
            return scale, round(zero_point), None
    return scale, 0, start.float()


def _rebuild_after_load(module: _Int8Layer, _incompatible_keys: Any) -> None:
    """Loaded codes, levels or scales: the kernel's packed weight is built again (once)."""
    module._build_kernel_weight()


class _Int8Layer(CheckedLayout):
    """State and the build-once kernel weight shared by the int8 conv and linear layers."""

    input_scale: Tensor
    input_zero_point: Tensor
    grid_error: Tensor
    packed_codes: Tensor
    int8_levels: Tensor
    weight_scale: Tensor
    bias: Tensor | None
    input_offset: Tensor | None
    output_channel_dim: int  # set by each subclass

    def _init_from(self, lut: Any, *, name: str, off_grid: str) -> None:
        self.weight_shape = tuple(lut.weight_codes.shape)
        self.weight_bits = lut.weight_bits
        self.act_bits = lut.act_bits
        self.act_signed = lut.act_signed
        self.weight_config = lut.weight_config
        self.activation_config = lut.activation_config
        self.per_sample_step = lut.activation_config.method == "asq"
        self.relu = False
        self.accumulates = False  # takes a residual to add (set by the lowering pass)
        self.private_accumulator = False  # the pass proved nothing reads that residual afterwards
        self.folded_batchnorm = False
        grid = to_int8_grid(lut.codebook, weight_limit(lut.act_bits))
        if not grid.exact and off_grid == "exact":
            raise ValueError(
                f"convert_adq: layer {name!r} has {self.weight_config.method} levels "
                f"{[round(v, 4) for v in lut.codebook.tolist()]}, which are not on an int8 grid "
                f"(nearest grid error {grid.max_error:.2e} of the largest level). Convert with "
                "off_grid='snap' to accept that error, or train with "
                "CodebookWeightConfig(int8_grid=True) so the codebook stays on the grid."
            )
        scale, zero_point, offset = uniform_encoding(lut.input_levels, f"convert_adq: layer {name!r}")
        # Everything the forward depends on is a buffer, so a state_dict carries it into a skeleton.
        self.register_buffer("input_scale", torch.tensor(scale, dtype=torch.float64))
        self.register_buffer("input_zero_point", torch.tensor(zero_point, dtype=torch.int64))
        self.register_buffer("grid_error", torch.tensor(grid.max_error, dtype=torch.float64))
        self.register_buffer("packed_codes", pack_codes(lut.weight_codes, self.weight_bits))
        self.register_buffer("int8_levels", grid.integers.clone())
        self.register_buffer("weight_scale", (lut.weight_scale.double() * grid.step).float())
        self.register_buffer("bias", None if lut.bias is None else lut.bias.detach().float().clone())
        self.register_buffer("input_offset", offset)
        self.register_load_state_dict_post_hook(_rebuild_after_load)

    # ---------------------------------------------------------------- weights
    @property
    def grid_exact(self) -> bool:
        """Whether the level table sat on its int8 grid (so no weight was moved)."""
        return float(self.grid_error) <= GRID_TOLERANCE

    def weight_codes(self) -> Tensor:
        """The uint8 weight codes, unpacked (for inspection; the kernel uses its own copy)."""
        count = math.prod(self.weight_shape)
        return unpack_codes(self.packed_codes, self.weight_bits, count).view(self.weight_shape)

    def int8_weight(self) -> Tensor:
        return self.int8_levels[self.weight_codes().long()]

    def dequantized_weight(self) -> Tensor:
        """The float weight the kernel computes with: weight_scale[o] * int8 weight."""
        scale = self.weight_scale.view(-1, *([1] * (len(self.weight_shape) - 1)))
        return scale * self.int8_weight().float()

    def _build_kernel_weight(self) -> None:
        """The kernel's packed weight and the scalars it is called with, from the buffers."""
        scale = 1.0 if self.per_sample_step else float(self.input_scale)
        self._kernel_input = (scale, int(self.input_zero_point))
        self._weight_zero_points = torch.zeros(self.weight_shape[0], dtype=torch.long)
        self._kernel_weight = self._prepack(*self._kernel_input)

    def _prepack(self, input_scale: float, input_zero_point: int) -> Tensor:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_kernel_weight", None)  # an opaque oneDNN tensor: rebuilt, never copied or pickled
        state.pop("_offset_cache", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._build_kernel_weight()

    # ---------------------------------------------------------------- folding, fusion
    @torch.no_grad()
    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> None:
        """y = gain * (conv + bias - mean) + beta with gain = gamma / sqrt(var + eps): into scale and bias."""
        assert bn.running_mean is not None and bn.running_var is not None
        gamma = torch.ones_like(bn.running_var) if bn.weight is None else bn.weight.detach()
        beta = torch.zeros_like(bn.running_mean) if bn.bias is None else bn.bias.detach()
        gain = gamma.double() / (bn.running_var.double() + bn.eps).sqrt()
        bias = torch.zeros_like(gain) if self.bias is None else self.bias.double()
        self.weight_scale = (self.weight_scale.double() * gain).float()
        self.bias = ((bias - bn.running_mean.double()) * gain + beta.double()).float()
        self.folded_batchnorm = True
        self._build_kernel_weight()

    @property
    def fuses_in_kernel(self) -> bool:
        """Bias, ReLU and residual sum run inside the kernel (uniform codes, no per-sample step)."""
        return self.input_offset is None and not self.per_sample_step

    def extra_repr(self) -> str:
        fused = [op for op, on in (("add", self.accumulates), ("relu", self.relu)) if on]
        return (
            f"weight_bits={self.weight_bits}, act_bits={self.act_bits}, "
            f"out_channels={self.weight_scale.numel()}, grid_exact={self.grid_exact}, "
            f"fused={'+'.join(fused) or 'none'}"
        )

    def layout(self) -> dict[str, Any]:
        return {
            "method": "adq_int8",
            "weight_method": self.weight_config.method,
            "activation_method": self.activation_config.method,
            "weight_bits": self.weight_bits,
            "act_bits": self.act_bits,
            "signed": self.act_signed,
            "weight_shape": list(self.weight_shape),
            "relu": self.relu,
            "accumulates": self.accumulates,
            "folded_batchnorm": self.folded_batchnorm,
        }

    def _kernel_operands(self, codes: Tensor) -> tuple[Tensor, float, int, Tensor, Tensor, Tensor]:
        """The six leading oneDNN operands every call takes: input codes with their scale and zero
        point, the prepacked weight with its per-channel scales and zero points."""
        x_scale, x_zero_point = self._kernel_input
        return codes, x_scale, x_zero_point, self._kernel_weight, self.weight_scale, self._weight_zero_points

    def _split(self, codes: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
        if isinstance(codes, tuple):  # ASQ: codes and each sample's step
            return codes
        return codes, None

    def _finish(
        self, y: Tensor, sample_step: Tensor | None, offset: Tensor | None, accumulate: Tensor | None
    ) -> Tensor:
        """The float epilogue when the kernel could not fuse it: step, offset, bias, sum, ReLU."""
        if sample_step is not None:
            y = y * sample_step.view(-1, *([1] * (y.dim() - 1)))
        if offset is not None:
            y = y + offset
        if self.bias is not None:
            y = y + broadcast_channels(self.bias, y.dim(), self.output_channel_dim)
        if accumulate is not None:
            y = y + accumulate
        return torch.relu(y) if self.relu else y


class Int8Conv2d(_Int8Layer):
    """Conv2d on uint8 activation codes and packed int8-grid weight codes, through oneDNN."""

    output_channel_dim = 1

    def __init__(self, lut: Any, *, name: str, off_grid: str = "snap") -> None:
        super().__init__()
        if lut.padding_mode != "zeros":
            raise UnsupportedLayer(
                f"convert_adq: layer {name!r} pads with padding_mode={lut.padding_mode!r}; the int8 "
                "kernel pads with zeros only. Convert with backend='reference', or keep the layer "
                "float with set_module_name(name, None)."
            )
        self._init_from(lut, name=name, off_grid=off_grid)
        self.stride, self.padding = lut.stride, lut.padding
        self.dilation, self.groups = lut.dilation, lut.groups
        if isinstance(self.padding, str):
            raise UnsupportedLayer(
                f"convert_adq: layer {name!r} has padding={self.padding!r}; the int8 kernel needs "
                "explicit padding sizes. Use integers, or convert with backend='reference'."
            )
        # oneDNN's AVX2 int8 1x1 convolution with a stride races on narrow inputs (wrong sums in
        # some runs at 2 threads, seen with 8 input channels in torch 2.14): a 1x1 conv with a
        # stride and no padding is the same as subsampling the input first, which is exact.
        self.subsample = (
            tuple(self.stride)
            if (
                tuple(self.weight_shape[2:]) == (1, 1)
                and tuple(self.padding) == (0, 0)
                and tuple(self.stride) != (1, 1)
            )
            else None
        )
        self._build_kernel_weight()

    def _kernel_args(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]:
        stride = (1, 1) if self.subsample is not None else tuple(self.stride)
        return stride, tuple(self.padding), tuple(self.dilation), self.groups

    def _prepack(self, input_scale: float, input_zero_point: int) -> Tensor:
        onednn.require_kernels("Int8Conv2d")
        self._offset_cache: dict[tuple[int, int], Tensor] = {}
        return onednn.prepack_conv(
            self.int8_weight(), self.weight_scale, input_scale, input_zero_point, *self._kernel_args()
        )

    def _offset_term(self, height: int, width: int) -> Tensor | None:
        """conv(per-channel offset map, weight): the offset's share, exact under zero padding (cached)."""
        if self.input_offset is None:
            return None
        key = (height, width)
        if key not in self._offset_cache:
            offset_map = self.input_offset.view(1, -1, 1, 1).expand(1, -1, height, width)
            self._offset_cache[key] = F.conv2d(
                offset_map,
                self.dequantized_weight(),
                None,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
        return self._offset_cache[key]

    def forward(self, codes: Tensor | tuple[Tensor, Tensor], accumulate: Tensor | None = None) -> Tensor:
        codes, sample_step = self._split(codes)
        height, width = codes.shape[-2:]
        if self.subsample is not None:
            step_h, step_w = self.subsample
            codes = codes[:, :, ::step_h, ::step_w].contiguous(memory_format=torch.channels_last)
        operands = self._kernel_operands(codes)
        args = self._kernel_args()
        if self.fuses_in_kernel:
            if accumulate is not None:
                # The kernel writes into its accumulator: give it a private channels_last float copy
                # unless the graph pass proved nothing else reads this tensor.
                private = (
                    self.private_accumulator
                    and accumulate.dtype == torch.float32
                    and (accumulate.is_contiguous(memory_format=torch.channels_last))
                )
                if not private:
                    accumulate = accumulate.to(torch.float32, memory_format=torch.channels_last, copy=True)
                return onednn.conv_add(
                    *operands,
                    self.bias,
                    accumulate,
                    *args,
                    relu=self.relu,
                )
            return onednn.conv(
                *operands,
                self.bias,
                *args,
                relu=self.relu,
            )
        y = onednn.conv(
            *operands,
            None,
            *args,
        )
        return self._finish(y, sample_step, self._offset_term(height, width), accumulate)


class Int8Linear(_Int8Layer):
    """Linear on uint8 activation codes and packed int8-grid weight codes, through oneDNN."""

    output_channel_dim = -1

    def __init__(self, lut: Any, *, name: str, off_grid: str = "snap") -> None:
        super().__init__()
        self._init_from(lut, name=name, off_grid=off_grid)
        if self.input_offset is not None:  # exact: a linear layer has no border, the offset is a bias
            with torch.no_grad():
                shift = self.dequantized_weight().double() @ self.input_offset.double()
                base = torch.zeros_like(shift) if self.bias is None else self.bias.double()
                self.bias = (base + shift).float()
                self.input_offset = None
        self._build_kernel_weight()

    def _prepack(self, input_scale: float, input_zero_point: int) -> Tensor:
        onednn.require_kernels("Int8Linear")
        return onednn.prepack_linear(self.int8_weight())

    def forward(self, codes: Tensor | tuple[Tensor, Tensor], accumulate: Tensor | None = None) -> Tensor:
        codes, sample_step = self._split(codes)
        operands = self._kernel_operands(codes)
        if self.fuses_in_kernel and accumulate is None:
            return onednn.linear(
                *operands,
                self.bias,
                relu=self.relu,
            )
        y = onednn.linear(
            *operands,
            None,
        )
        return self._finish(y, sample_step, None, accumulate)


__all__ = ["GridLevels", "Int8Conv2d", "Int8Linear", "UnsupportedLayer", "uniform_encoding"]
