"""The one place that calls PyTorch's oneDNN int8 kernels.

``torch.ops.onednn.qconv_pointwise`` / ``qlinear_pointwise`` take plain uint8
activations (per-tensor scale and zero point) and plain int8 weights
(per-output-channel scales), accumulate in int32 and return float32 with the
bias and a ReLU or a residual sum applied. They are the targets of PyTorch's own
x86 int8 lowering (PT2E + inductor), not a documented API: their names and
overloads moved between releases, so this module finds them by name, checks the
schema it relies on and runs a tiny exactness probe before the first use.
Quantized tensor types (``quint8``, deprecated) are never involved.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Int8KernelsUnavailable",
    "conv",
    "conv_add",
    "kernel_problem",
    "linear",
    "prepack_conv",
    "prepack_linear",
    "require_kernels",
]


class Int8KernelsUnavailable(RuntimeError):
    """The running PyTorch build or CPU has no usable oneDNN int8 kernels."""


def _overload(packet_names: Sequence[str], overload: str) -> Any:
    """The first ``torch.ops.onednn.<name>.<overload>`` that exists, else None."""
    namespace = torch.ops.onednn
    for name in packet_names:
        try:
            packet = getattr(namespace, name)
        except (AttributeError, RuntimeError):
            continue
        if overload in packet.overloads():
            return getattr(packet, overload)
    return None


#: The kernels, looked up once. A plain module dict rather than functools.cache, so that
#: torch.compile reads the ops from it and traces a whole converted model as one graph
#: (dynamo cannot follow the lookup itself).
_OPS: dict[str, Any] = {}


def _ops() -> dict[str, Any]:
    """The kernels under their current names (the conv op was renamed in PyTorch 2.8)."""
    if not _OPS:
        _OPS.update(
            conv_prepack=_overload(["qconv_prepack"], "default"),
            conv=_overload(["qconv_pointwise", "qconv2d_pointwise"], "default"),
            conv_binary=_overload(["qconv2d_pointwise", "qconv_pointwise"], "binary"),
            linear_prepack=_overload(["qlinear_prepack"], "default"),
            linear=_overload(["qlinear_pointwise"], "default"),
        )
    return _OPS


_EXPECTED_ARGUMENTS = {
    "conv_prepack": ["weight", "w_scales", "x_scale", "x_zp", "stride", "padding", "dilation", "groups"],
    "conv": [
        "qx",
        "x_scale",
        "x_zero_point",
        "qw",
        "w_scale",
        "w_zero_point",
        "bias",
        "stride",
        "padding",
        "dilation",
        "groups",
        "output_scale",
        "output_zero_point",
        "output_dtype",
        "attr",
        "scalars",
        "algorithm",
    ],
    "conv_binary": [
        "qx",
        "x_scale",
        "x_zero_point",
        "qw",
        "w_scale",
        "w_zero_point",
        "qaccum",
        "bias",
        "stride",
        "padding",
        "dilation",
        "groups",
        "output_scale",
        "output_zero_point",
        "output_dtype",
        "accum_scale",
        "accum_zero_point",
        "binary_attr",
        "alpha",
        "unary_attr",
        "unary_scalars",
        "unary_algorithm",
    ],
    "linear_prepack": ["weight", "x_shape"],
    "linear": [
        "qx",
        "x_scale",
        "x_zero_point",
        "qw",
        "w_scale",
        "w_zero_point",
        "bias",
        "output_scale",
        "output_zero_point",
        "output_dtype",
        "post_op_name",
        "post_op_args",
        "post_op_algorithm",
    ],
}


@functools.cache
def kernel_problem() -> str | None:
    """Why the int8 kernels cannot be used here, or None when they can (checked once per process)."""
    if not torch.backends.mkldnn.is_available():
        return f"this PyTorch build ({torch.__version__}) has no oneDNN (mkldnn) support"
    for key, op in _ops().items():
        if op is None:
            return f"this PyTorch build ({torch.__version__}) has no torch.ops.onednn {key} kernel"
        names = [a.name for a in op._schema.arguments][: len(_EXPECTED_ARGUMENTS[key])]
        if names != _EXPECTED_ARGUMENTS[key]:
            return (
                f"torch.ops.onednn {op._schema.name} in PyTorch {torch.__version__} has the "
                f"arguments {names}, not the {_EXPECTED_ARGUMENTS[key]} adq_fx was written for"
            )
    try:
        return _probe()
    except RuntimeError as error:  # oneDNN raises RuntimeError for an unsupported CPU
        return f"the oneDNN int8 kernels fail on this CPU ({error})"


def _probe() -> str | None:
    """Integer sums of small codes and weights come back exact, with a zero point and padding."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (2, 8, 5, 5), generator=generator, dtype=torch.uint8)
    weight = torch.randint(-127, 128, (4, 8, 3, 3), generator=generator, dtype=torch.int8)
    scale, zero_points = torch.ones(4), torch.zeros(4, dtype=torch.long)
    packed = prepack_conv(weight, scale, 1.0, 3, (1, 1), (1, 1), (1, 1), 1)
    got = conv(
        codes.contiguous(memory_format=torch.channels_last),
        1.0,
        3,
        packed,
        scale,
        zero_points,
        None,
        (1, 1),
        (1, 1),
        (1, 1),
        1,
    )
    expected = torch.nn.functional.conv2d(codes.double() - 3, weight.double(), padding=1)
    if not torch.equal(got.double(), expected):
        return "the oneDNN int8 convolution does not reproduce exact integer sums on this CPU"
    packed_linear = prepack_linear(weight[:, :, 0, 0])
    got = linear(codes[:, :, 0, 0], 1.0, 3, packed_linear, scale, zero_points, None)
    expected = (codes[:, :, 0, 0].double() - 3) @ weight[:, :, 0, 0].double().T
    if not torch.equal(got.double(), expected):
        return "the oneDNN int8 linear layer does not reproduce exact integer sums on this CPU"
    return None


def require_kernels(context: str) -> None:
    """Raise :class:`Int8KernelsUnavailable` naming ``context`` and the fix when kernels are missing."""
    problem = kernel_problem()
    if problem is not None:
        raise Int8KernelsUnavailable(
            f"{context}: {problem}. Use backend='reference' (exact, float math), or run on an x86 "
            "CPU build of PyTorch with oneDNN (the default pip wheels)."
        )


def prepack_conv(
    weight: Tensor,
    weight_scale: Tensor,
    input_scale: float,
    input_zero_point: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """int8 (O, I/groups, kh, kw) weights in oneDNN's blocked layout (an opaque tensor)."""
    return _ops()["conv_prepack"](
        weight.contiguous(),
        weight_scale.contiguous(),
        input_scale,
        input_zero_point,
        list(stride),
        list(padding),
        list(dilation),
        groups,
        None,
    )


def conv(
    codes: Tensor,
    input_scale: float,
    input_zero_point: int,
    packed: Tensor,
    weight_scale: Tensor,
    weight_zero_points: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    *,
    relu: bool = False,
) -> Tensor:
    """float32 ``conv((codes - zp) * input_scale, int8 * weight_scale) + bias``, ReLU optional.

    ``weight_zero_points`` is int64 zeros, one per output channel (symmetric weights), made by the caller
    once rather than per call.
    """
    return _ops()["conv"](
        codes,
        input_scale,
        input_zero_point,
        packed,
        weight_scale,
        weight_zero_points,
        bias,
        list(stride),
        list(padding),
        list(dilation),
        groups,
        1.0,
        0,
        torch.float32,
        "relu" if relu else "none",
        [],
        "",
    )


def conv_add(
    codes: Tensor,
    input_scale: float,
    input_zero_point: int,
    packed: Tensor,
    weight_scale: Tensor,
    weight_zero_points: Tensor,
    bias: Tensor | None,
    accumulate: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    *,
    relu: bool,
) -> Tensor:
    """:func:`conv` plus ``accumulate`` (float32, the output's shape), ReLU optional, in one kernel.

    The kernel writes the result into ``accumulate``; the caller passes a tensor nothing else reads.
    """
    return _ops()["conv_binary"](
        codes,
        input_scale,
        input_zero_point,
        packed,
        weight_scale,
        weight_zero_points,
        accumulate,
        bias,
        list(stride),
        list(padding),
        list(dilation),
        groups,
        1.0,
        0,
        torch.float32,
        1.0,
        0,
        "sum",
        1.0,
        "relu" if relu else "none",
        [],
        "",
    )


def prepack_linear(weight: Tensor) -> Tensor:
    """int8 (O, I) weights in oneDNN's layout (an opaque tensor)."""
    return _ops()["linear_prepack"](weight.contiguous(), None)  # strided views pack wrongly


def linear(
    codes: Tensor,
    input_scale: float,
    input_zero_point: int,
    packed: Tensor,
    weight_scale: Tensor,
    weight_zero_points: Tensor,
    bias: Tensor | None,
    *,
    relu: bool = False,
) -> Tensor:
    """float32 ``linear((codes - zp) * input_scale, int8 * weight_scale) + bias``, ReLU optional."""
    # The kernel reads its input as dense rows: a strided view gives wrong sums, not an error.
    return _ops()["linear"](
        codes.contiguous(),
        input_scale,
        input_zero_point,
        packed,
        weight_scale,
        weight_zero_points,
        bias,
        1.0,
        0,
        torch.float32,
        "relu" if relu else "none",
        [],
        "",
    )
