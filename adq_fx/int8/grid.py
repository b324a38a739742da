"""A layer's level table on an int8 grid: ``levels ≈ step * integers``, |integers| <= limit.

Integer kernels multiply activation codes by int8 weights, so each level of a
layer's table (its codebook, or N2UQ's, LSQ's or POST's levels) must become an
integer times one per-layer step; the per-channel float scale absorbs the step.
A table already on a grid (LSQ's integers, N2UQ's uniform levels, a codebook
trained with ``CodebookWeightConfig(int8_grid=True)``) maps exactly; any other
(a learned codebook, POST's powers of sqrt 2) is snapped to the grid, among
those that fit, nearest to all its levels, and the error of that snap is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: int16 pair sums in the AVX2 (non-VNNI) u8 x s8 instruction saturate at 32767:
#: 2 * max_code * max|w| must stay below it for the integer sums to be exact.
PAIR_SUM_LIMIT = 32767
#: Relative tolerance for "on the grid": float round-off of levels stored in fp32.
GRID_TOLERANCE = 1e-6
#: The training-time grid of ``CodebookWeightConfig(int8_grid=True)``, in units of
#: the per-channel RMS: multiples of 1/32 up to 127/32 ≈ 3.97 RMS (powers of two
#: keep the snapped values exact in fp32).
TRAINING_GRID_STEP = 2.0**-5


@dataclass(frozen=True, kw_only=True)
class GridLevels:
    """A level table expressed on an int8 grid."""

    integers: Tensor  # int8 (K,)
    step: float  # levels ≈ step * integers
    max_error: float  # max |step * integers - levels| / max |levels|
    exact: bool  # max_error within float round-off


def weight_limit(activation_bits: int) -> int:
    """Largest |int8 weight| whose pair sums cannot saturate with ``activation_bits``-bit codes.

    >>> weight_limit(4), weight_limit(8)
    (127, 64)
    """
    max_code = 2**activation_bits - 1
    return min(127, PAIR_SUM_LIMIT // (2 * max_code))


def snap_to_training_grid(levels: Tensor) -> Tensor:
    """The nearest multiples of :data:`TRAINING_GRID_STEP`, within ±127 steps (exact in fp32)."""
    integers = torch.round(levels / TRAINING_GRID_STEP).clamp(-127, 127)
    return integers * TRAINING_GRID_STEP


#: Grid steps tried for a table on no exact grid: peak / x for this many x in [limit / 2, limit].
SNAP_CANDIDATES = 20001


def to_int8_grid(levels: Tensor, limit: int = 127) -> GridLevels:
    """The coarsest exact grid ``max|levels| / m`` (m <= limit) if there is one; else the step
    in [max|levels| / limit, 2 max|levels| / limit] whose grid is nearest to every level.

    A table of K levels rounds onto most steps with an error near half a step; scanning
    the step finds one where all K levels sit close to integers (a few times smaller
    error than the step max|levels| / limit alone; tests/test_int8.py checks it is never worse).

    >>> g = to_int8_grid(torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    >>> g.integers.tolist(), g.exact
    ([-3, -1, 1, 3], True)
    """
    values = levels.detach().double().reshape(-1)
    peak = float(values.abs().max()) if values.numel() else 0.0
    if peak == 0.0:
        return GridLevels(
            integers=torch.zeros(values.numel(), dtype=torch.int8), step=1.0, max_error=0.0, exact=True
        )
    for multiple in range(1, limit + 1):
        step = peak / multiple
        integers = torch.round(values / step)
        error = float((integers * step - values).abs().max()) / peak
        if error <= GRID_TOLERANCE:
            return GridLevels(integers=integers.to(torch.int8), step=step, max_error=error, exact=True)
    steps = peak / torch.linspace(limit / 2, limit, SNAP_CANDIDATES, dtype=torch.float64)
    candidates = torch.round(values / steps[:, None])  # |integers| <= round(peak / step) <= limit
    errors = (candidates * steps[:, None] - values).abs().amax(1)
    best = int(errors.argmin())
    return GridLevels(
        integers=candidates[best].to(torch.int8),
        step=float(steps[best]),
        max_error=float(errors[best]) / peak,
        exact=False,
    )
