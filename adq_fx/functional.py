"""Pure tensor math for the quantizers. No modules, no state, no side effects.

Weights (ADQ): ``w' = w / s`` with a per-output-channel scale ``s``; a sorted
1-D codebook ``C`` of K levels; the code of ``w'`` is its nearest entry (eq. 2).
Activations (N2UQ): n = 2^b - 1 learned intervals, thresholds at their
midpoints, uniform output levels, generalised STE (eq. 1).

Both quantizers are written so that the forward value is *exactly* the value
the converted lookup-table model computes: the STE adds ``x - sg(x)``, which
is exactly zero in floating point, instead of ``sg(q - x)``, which rounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import kernels
from ._layout import gather
from .kernels import bucketize
from .kernels import cluster_statistics as cluster_statistics  # per-element work, part of this API
from .kernels import code_counts as code_counts


def straight_through(x: Tensor, x_quantized: Tensor) -> Tensor:
    """Forward value exactly ``x_quantized``; gradient passes to ``x`` unchanged (eq. 4).

    >>> x = torch.tensor([0.3], requires_grad=True)
    >>> y = straight_through(x, torch.tensor([0.5]))
    >>> y.item(), torch.autograd.grad(y.sum(), x)[0].item()
    (0.5, 1.0)
    """
    return x_quantized.detach() + (x - x.detach())


# --------------------------------------------------------------------------- weights
def per_channel_rms(weight: Tensor, floor: float = 1e-8) -> Tensor:
    """Per-output-channel root-mean-square of ``weight`` (C_out, ...) -> (C_out,).

    RMS makes the normalised weights of every channel unit-variance, so one
    codebook fits all channels and N(0, 1) is a meaningful random init.
    """
    flat = weight.detach().reshape(weight.shape[0], -1).float()
    return flat.pow(2).mean(dim=1).sqrt().clamp_min(floor)


def normalise(weight: Tensor, scale: Tensor) -> Tensor:
    """``w' = w / s`` with ``s`` (C_out,) broadcast over the remaining dims."""
    return weight / scale.view(-1, *([1] * (weight.dim() - 1)))


def broadcast_channels(per_channel: Tensor, dims: int, channel_dim: int) -> Tensor:
    """Shape a (C,) tensor to broadcast against a ``dims``-dim tensor along ``channel_dim``."""
    shape = [1] * dims
    shape[channel_dim] = -1
    return per_channel.view(shape)


def denormalise(weight_normalised: Tensor, scale: Tensor) -> Tensor:
    """``w = s * w'``, the inverse of :func:`normalise`."""
    return scale.view(-1, *([1] * (weight_normalised.dim() - 1))) * weight_normalised


def quantile(values: Tensor, probs: Tensor) -> Tensor:
    """Linear-interpolation quantiles of a 1-D tensor (torch.quantile's default method).

    Sort-based, so it has no input-size limit (torch.quantile stops at 2^24).

    >>> quantile(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0.5])).tolist()
    [1.5]
    """
    ordered = values.reshape(-1).float().sort().values
    position = probs.to(ordered) * (ordered.numel() - 1)
    low = position.floor().long()
    high = position.ceil().long()
    frac = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * frac


def magnitude_quantile(x: Tensor, prob: float, *, max_samples: int = 2**20) -> Tensor:
    """The ``prob`` quantile of |x|, from an evenly strided sample of at most ``max_samples`` values.

    A start-up statistic: exact for tensors up to ``max_samples`` elements, and
    bounded in cost for an ImageNet batch (50M activations would take seconds to sort).
    """
    flat = x.detach().reshape(-1)
    stride = max(1, -(-flat.numel() // max_samples))
    return quantile(flat[::stride].abs(), torch.tensor([prob]))[0]


def quantile_codebook(weight_normalised: Tensor, bits: int, *, full_levels: bool = False) -> Tensor:
    """Alg. 1: a sorted codebook from quantiles of the normalised weights.

    Alg. 1 gives floor((2^b - 1) / 2) positive and as many negative levels plus
    zero, i.e. 2^b - 1 levels. With ``full_levels`` all 2^b codes are used:
    quantiles at evenly spaced probabilities of the whole distribution, no zero.

    >>> quantile_codebook(torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]), 2).tolist()
    [-2.0, 0.0, 2.0]
    """
    flat = weight_normalised.detach().reshape(-1).float()
    if not bool(flat.ne(0).any()):
        raise ValueError("all weights are zero: there is no distribution to take quantiles of")
    if full_levels:
        probs = torch.linspace(0, 1, 2**bits + 2)[1:-1]
        return quantile(flat, probs).sort().values
    per_side = (2**bits - 1) // 2
    probs = torch.linspace(0, 1, per_side + 2)[1:-1]
    positive, negative = flat[flat > 0], -flat[flat < 0]
    # A one-signed weight tensor has no quantiles on the other side: mirror it.
    positive = positive if positive.numel() else negative
    negative = negative if negative.numel() else positive
    levels = torch.cat([-quantile(negative, probs), flat.new_zeros(1), quantile(positive, probs)])
    return levels.sort().values


def lloyd_codebook(weight_normalised: Tensor, codebook: Tensor, steps: int, *, pin_zero: bool) -> Tensor:
    """``steps`` k-means (Lloyd) steps on the weights from ``codebook``: each entry moves to the mean
    of the weights nearest it (an entry no weight chose stays); with ``pin_zero`` the zero entry stays 0.

    The fixed point the EMA k-means of eqs. (5)-(7) moves toward, reached before training: the
    quantiles of Alg. 1 put the outer entries at the 75th percentile of |w| (3 bits), so every
    larger weight, a quarter of them, is clipped there at the start.
    """
    flat = weight_normalised.detach().reshape(-1).float()
    levels = codebook.detach().float().clone()
    zero = levels == 0 if pin_zero else torch.zeros_like(levels, dtype=torch.bool)
    for _ in range(steps):
        counts, sums = cluster_statistics(flat, nearest_codes(flat, levels), levels.numel())
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), levels)
        levels = torch.where(zero, levels, moved).sort().values
    return levels


def normal_codebook(num_levels: int, *, pin_zero: bool, seed: int) -> Tensor:
    """Sorted N(0, 1) samples (the paper's random-init ablation); the entry nearest 0 set to 0."""
    generator = torch.Generator().manual_seed(seed)
    levels = torch.randn(num_levels, generator=generator).sort().values
    if pin_zero:
        levels[levels.abs().argmin()] = 0.0
    return levels


def codebook_midpoints(codebook: Tensor) -> Tensor:
    """Decision boundaries of nearest-entry assignment for a sorted codebook (K,) -> (K-1,).

    A midpoint of two adjacent floats rounds onto the upper one, which would then
    be assigned the lower code (ties go down); it is moved one ulp below it.

    >>> lo = torch.tensor([1.0]); hi = torch.nextafter(lo, torch.tensor([2.0]))
    >>> bool(codebook_midpoints(torch.cat([lo, hi])) < hi)
    True
    """
    low, high = codebook[:-1], codebook[1:]
    mid = (low + high) / 2
    return torch.where(mid >= high, torch.nextafter(high, low), mid)


def nearest_codes(weight_normalised: Tensor, codebook: Tensor) -> Tensor:
    """Eq. (2): index of the nearest codebook entry, same shape as the input, int32.

    In 1-D the nearest entry of a sorted codebook is a bucket between
    midpoints, so this is a binary search, not an N x K distance matrix.
    A value exactly on a midpoint goes to the lower entry.
    """
    return bucketize(weight_normalised, codebook_midpoints(codebook), out_int32=True)


class _CodebookQuantize(torch.autograd.Function):
    """Eqs. (2)-(4) in one node: ``scale * codebook[nearest code of w / scale]`` and the
    commitment term ``mean((sg(ŵ') - w')^2)`` of the same assignment.

    The straight-through gradient of the chain w -> w/s -> ŵ' -> s·ŵ' is the
    identity, so backward passes the upstream gradient through unchanged instead
    of running the chain's elementwise passes; the commitment gradient
    ``2 c (w' - ŵ') / (N s)`` is added in the same pass (``c`` the channel's commitment
    weight, 1 without ``commitment_weights``). Also returns the EMA
    step's cluster statistics of the same assignment (no gradient). The forward
    is :func:`adq_fx.kernels.codebook_forward`: one fused pass where it compiles, eager ops otherwise.
    """

    @staticmethod
    def forward(ctx, weight, scale, codebook, with_commitment, with_statistics, commitment_weights):
        quantized, residual, commitment, statistics = kernels.codebook_forward(
            weight,
            scale,
            codebook,
            codebook_midpoints(codebook),
            with_commitment=with_commitment,
            with_statistics=with_statistics,
            commitment_weights=commitment_weights,
        )
        if statistics is None:  # two distinct empty outputs: autograd outputs must not alias
            statistics = (codebook.new_empty(0), codebook.new_empty(0))
        counts, sums = statistics
        ctx.save_for_backward(residual, scale, commitment_weights)
        ctx.mark_non_differentiable(counts, sums)
        ctx.set_materialize_grads(False)  # an unused commitment output costs nothing in backward
        return quantized, commitment, counts, sums

    @staticmethod
    def backward(ctx, grad_quantized, grad_commitment, _grad_counts, _grad_sums):
        residual, scale, commitment_weights = ctx.saved_tensors
        grad = grad_quantized
        if ctx.needs_input_grad[0] and grad_commitment is not None and residual is not None:
            coefficient = 2.0 * grad_commitment / residual.numel()
            if commitment_weights is not None:
                coefficient = coefficient * commitment_weights
            per_channel = broadcast_channels(coefficient / scale, residual.dim(), 0)
            grad = torch.addcmul(grad, residual, per_channel) if grad is not None else residual * per_channel
        return grad, None, None, None, None, None


def codebook_quantize(
    weight: Tensor,
    scale: Tensor,
    codebook: Tensor,
    *,
    with_commitment: bool = True,
    with_statistics: bool = False,
    commitment_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(quantized weight with the STE, commitment mean((sg(ŵ') - w')^2), step counts, step sums).

    ``commitment_weights`` (C_out,) weights each output channel's squares in the mean
    (:func:`layer_commitment_weights`); None weights them all 1, eq. (3) as written.
    ``with_commitment=False`` (evaluation) skips the commitment term and returns 0 for it.
    ``with_statistics=True`` also returns :func:`cluster_statistics` of this assignment
    (eqs. 5-6 increments); otherwise both are empty.

    >>> w = torch.tensor([[0.2, -1.1]], requires_grad=True)
    >>> q, c, counts, sums = codebook_quantize(w, torch.tensor([1.0]), torch.tensor([-1.0, 0.0, 1.0]),
    ...                                        with_statistics=True)
    >>> q.tolist(), round(c.item(), 4), counts.tolist(), torch.autograd.grad(q.sum(), w)[0].tolist()
    ([[0.0, -1.0]], 0.025, [1.0, 1.0, 0.0], [[1.0, 1.0]])
    """
    flags = (with_commitment, with_statistics)
    return _CodebookQuantize.apply(weight, scale, codebook, *flags, commitment_weights)


def layer_commitment_weights(scale: Tensor) -> Tensor:
    """``s_c^2 / mean(s^2)``: the commitment in units of the layer's RMS weight instead of each channel's.

    On ``w' = w / s_c`` the commitment's curvature in ``w`` is ``2 / (N s_c^2)``, so a
    near-dead channel (RMS a hundredth of its layer's, common in pre-trained nets) gets
    steps 10^4 times its neighbours' and SGD with momentum diverges on it (ResNet-20 at
    beta 1, lr 0.02). With these weights the term is ``mean((ŵ - w)^2) / mean(s^2)``:
    the same curvature ``2 / (N mean(s^2))`` for every weight of the layer, the same value
    as eq. (3) where every channel has the layer's RMS.
    """
    squares = scale.detach().float().pow(2)
    return squares / squares.mean().clamp_min(torch.finfo(torch.float32).tiny)


def ema_kmeans_step(
    codebook: Tensor,
    ema_counts: Tensor,
    ema_sums: Tensor,
    step_counts: Tensor,
    step_sums: Tensor,
    *,
    decay: float,
    eps: float,
    pin_zero: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Eqs. (5)-(7): new (codebook, counts, sums), sorted together.

    Choices the paper leaves open, made here:
    - a dead entry (EMA count <= eps) keeps its value instead of collapsing to 0
      through E / (n + eps); it can win weights back later;
    - with ``pin_zero`` the entry at 0 stays exactly 0 (its statistics still
      accumulate), so zero weights stay representable and the codebook symmetric
      about a true zero;
    - the result is re-sorted with its statistics; 1-D k-means keeps the order
      anyway, this guards against floating-point ties.
    """
    counts = decay * ema_counts + (1 - decay) * step_counts
    sums = decay * ema_sums + (1 - decay) * step_sums
    alive = counts > eps
    updated = torch.where(alive, sums / (counts + eps), codebook)
    if pin_zero:
        updated = torch.where(codebook == 0, torch.zeros_like(updated), updated)
    order = updated.argsort(stable=True)
    return updated[order], counts[order], sums[order]


# ------------------------------------------------------------------ baseline weights
def uniform_levels(bits: int) -> Tensor:
    """N2UQ's weight levels: 2^b uniform mid-rise values -1 + 2k / (2^b - 1), no zero.

    >>> [round(v, 4) for v in uniform_levels(2).tolist()]
    [-1.0, -0.3333, 0.3333, 1.0]
    """
    count = 2**bits
    return torch.arange(count, dtype=torch.float32) * (2.0 / (count - 1)) - 1.0


def mean_abs_scale(weight: Tensor, bits: int, floor: float = 1e-8) -> Tensor:
    """N2UQ's per-channel weight scale gamma_b * mean|W_c| with gamma_b = (2^b - 1) / 2^(b-1)."""
    gamma = (2**bits - 1) / 2 ** (bits - 1)
    flat = weight.detach().reshape(weight.shape[0], -1).float()
    return (gamma * flat.abs().mean(dim=1)).clamp_min(floor)


# ------------------------------------------------------------------------------- ASQ
def pool_to_channels(x: Tensor, channel_dim: int) -> Tensor:
    """(N, C): the mean over every dim but the batch and the channels."""
    channel_dim = channel_dim % x.dim()
    dims = [d for d in range(1, x.dim()) if d != channel_dim]
    return x.mean(dim=dims) if dims else x


# ------------------------------------------------------------------------------ POST
def post_levels(bits: int, base: float) -> Tensor:
    """{0} ∪ {±base^-k : k = 0..2^(b-1)-2}, sorted: 2^b - 1 levels in [-1, 1].

    >>> [round(v, 4) for v in post_levels(3, 2 ** 0.5).tolist()]
    [-1.0, -0.7071, -0.5, 0.0, 0.5, 0.7071, 1.0]
    """
    magnitudes = base ** -torch.arange(2 ** (bits - 1) - 1, dtype=torch.float64)
    levels = torch.cat([-magnitudes, magnitudes.new_zeros(1), magnitudes])
    return levels.sort().values.float()


def clipped_quantize(weight: Tensor, clip: Tensor, levels: Tensor) -> Tensor:
    """clip * nearest level of clamp(w / clip, -1, 1), with the STE on the rounding.

    The weight gets gradient 1 inside the clip range and 0 outside; the clip
    gets (level - w / clip) inside and ±1 outside (as LSQ's step, APoT's α).
    The value is exactly clip * level, the product the converted model computes.
    """
    ratio = torch.clamp(weight / clip, -1.0, 1.0)
    level = straight_through(ratio, gather(levels, nearest_codes(ratio, levels)))
    return level * clip


# ------------------------------------------------------------------------------- LSQ
def lsq_range(bits: int, signed: bool) -> tuple[int, int]:
    """(Q_N, Q_P): the integer range of a b-bit LSQ quantizer.

    >>> lsq_range(3, True), lsq_range(3, False)
    ((-4, 3), (0, 7))
    """
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def lsq_initial_step(values: Tensor, q_positive: int, dims: tuple[int, ...] | None = None) -> Tensor:
    """LSQ's init 2 * mean|x| / sqrt(Q_P), over ``dims`` (all dims when None)."""
    magnitude = values.detach().float().abs()
    mean = magnitude.mean() if dims is None else magnitude.mean(dim=dims)
    return (2 * mean / q_positive**0.5).clamp_min(1e-8)


MIN_SCALE = 1e-8  # the least value a learned scale or step takes in the forward


def positive(value: Tensor, floor: float = MIN_SCALE) -> Tensor:
    """``max(|value|, floor)``: the scale a learned parameter stands for, always positive.

    Exactly ``value`` where it is positive, so training and conversion see the
    same numbers; a scale an optimizer drives through zero is read as its
    magnitude, a live quantizer with a gradient, rather than an inverted one.
    """
    return value.abs().clamp_min(floor)


class _BoundRelativeGradient(torch.autograd.Function):
    """Identity forward; backward scales the joint gradient of the inputs to at most
    ``bound`` times their joint norm (a trust-ratio cap, as LARS uses one)."""

    @staticmethod
    def forward(ctx, bound, *values):
        ctx.bound = bound
        ctx.save_for_backward(*values)
        return tuple(v.clone() for v in values)

    @staticmethod
    def backward(ctx, *grads):
        values = ctx.saved_tensors
        grads = tuple(torch.zeros_like(v) if g is None else g for v, g in zip(values, grads, strict=True))
        grad_norm = torch.sqrt(sum(g.float().pow(2).sum() for g in grads))
        value_norm = torch.sqrt(sum(v.detach().float().pow(2).sum() for v in values))
        factor = torch.where(
            grad_norm > ctx.bound * value_norm,
            ctx.bound * value_norm / grad_norm.clamp_min(1e-30),
            torch.ones_like(grad_norm),
        )
        return (None, *(g * factor.to(g.dtype) for g in grads))


def bound_relative_gradient(bound: float, *values: Tensor) -> tuple[Tensor, ...]:
    """``values`` unchanged; their joint gradient capped at ``bound`` x their joint norm.

    One SGD step of learning rate lr then moves the group by at most
    ``lr · bound`` of its own size, whatever the loss does: the threshold
    parameters' gradients are sums over a whole activation, and on a
    random-init network they are large enough for three plain SGD steps to
    push the thresholds to 1e19. Typical gradients are left as they are.
    """
    return _BoundRelativeGradient.apply(bound, *values)


def scale_gradient(value: Tensor, factor: float) -> Tensor:
    """Forward value exactly ``value``; gradient multiplied by ``factor`` (LSQ's g)."""
    scaled = value * factor
    return value.detach() + (scaled - scaled.detach())


def lsq_codes(x: Tensor, step: Tensor, q_negative: int, q_positive: int) -> Tensor:
    """Integer codes 0..Q_P-Q_N of round(clamp(x / step, Q_N, Q_P)), int64."""
    return torch.round(torch.clamp(x.detach() / step.detach(), q_negative, q_positive)).long() - q_negative


def lsq_quantize(x: Tensor, step: Tensor, q_negative: int, q_positive: int, grad_scale: float) -> Tensor:
    """LSQ: round(clamp(x / s, Q_N, Q_P)) * s with its straight-through gradients.

    The value is exactly (integer level) * s, the product the converted model
    computes; x gets gradient 1 inside the range and 0 outside; s gets LSQ's
    gradient (q - x/s inside, Q_N or Q_P outside) times ``grad_scale``.
    """
    step = scale_gradient(step, grad_scale)
    ratio = torch.clamp(x / step, q_negative, q_positive)
    level = straight_through(ratio, torch.round(ratio))
    return level * step


# ----------------------------------------------------------------------- activations
def interval_edges(start: Tensor, intervals: Tensor, min_interval: float) -> tuple[Tensor, Tensor]:
    """Edges d_0..d_n (n+1,) and floored interval lengths a (n,)."""
    lengths = intervals.clamp_min(min_interval)
    edges = start + torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    return edges, lengths


def interval_thresholds(start: Tensor, intervals: Tensor, min_interval: float) -> Tensor:
    """Forward thresholds T_k = d_k + a_k / 2 (n,), strictly increasing."""
    edges, lengths = interval_edges(start, intervals, min_interval)
    return edges[:-1] + lengths / 2


def threshold_input(x: Tensor, beta1: Tensor, shift: Tensor | None) -> Tensor:
    """u = beta1 * (x + shift): the value the thresholds are compared against."""
    return beta1 * (x if shift is None else x + shift)


def threshold_codes(u: Tensor, thresholds: Tensor) -> Tensor:
    """Eq. (1): the number of thresholds at or below u, in {0..n}, int64."""
    return bucketize(u, thresholds, right=True)


def threshold_output(level: Tensor, beta2: Tensor, shift: Tensor | None) -> Tensor:
    """Output value beta2 * level, minus the signed shift when there is one."""
    out = beta2 * level
    return out if shift is None else out - shift


def code_levels(codes: Tensor, num_intervals: int, dtype: torch.dtype) -> Tensor:
    """Uniform output levels Δ·q with Δ = 2 / n: codes 0..n map to [0, 2]."""
    return codes.to(dtype) * (2.0 / num_intervals)


def interleaved_boundaries(start: Tensor, intervals: Tensor, min_interval: float) -> Tensor:
    """Search boundaries that give code and interval in one search (2n+1,).

    ``[d_0⁺, T_0, d_1, T_1, ..., d_{n-1}, T_{n-1}, d_n]`` with d_0⁺ the next float
    above d_0. The position p = #{boundaries <= u} then says everything: the code
    is p >> 1, p = 0 and p = 2n+1 lie outside (d_0, d_n), and an inside p is in
    interval (p - 1) >> 1.
    """
    edges, lengths = interval_edges(start, intervals, min_interval)
    n = lengths.numel()
    boundaries = lengths.new_empty(2 * n + 1)
    boundaries[0] = torch.nextafter(edges[0], edges[0] + 1)
    boundaries[1:-1:2] = edges[:-1] + lengths / 2
    boundaries[2:-1:2] = edges[1:-1]
    boundaries[-1] = edges[-1]
    return boundaries


def input_space_thresholds(thresholds: Tensor, beta1: Tensor) -> Tensor | None:
    """Per threshold T, the least float x with ``fl(beta1 * x) >= T``, or None if there is none.

    For beta1 > 0 the rounded product is monotone in x, so ``x >= x_T`` holds exactly
    when ``beta1 * x >= T`` does: an encoder can compare the input itself and skip
    the multiply, with the same codes bit for bit. Found from ``T / beta1`` by
    stepping one float at a time (a few steps at most).

    >>> b = torch.tensor(0.3); t = torch.tensor([0.1, 0.7])
    >>> x = input_space_thresholds(t, b)
    >>> bool(((b * x) >= t).all()), bool(((b * torch.nextafter(x, -x.abs() - 1)) < t).all())
    (True, True)
    """
    if not (bool(beta1 > 0) and bool(torch.isfinite(beta1)) and bool(torch.isfinite(thresholds).all())):
        return None
    inf = torch.full_like(thresholds, float("inf"))
    candidate = thresholds / beta1
    for _ in range(64):  # up until the product reaches T
        short = beta1 * candidate < thresholds
        if not bool(short.any()):
            break
        candidate = torch.where(short, torch.nextafter(candidate, inf), candidate)
    for _ in range(64):  # down while the float below still reaches T
        below = torch.nextafter(candidate, -inf)
        still = beta1 * below >= thresholds
        if not bool(still.any()):
            break
        candidate = torch.where(still, below, candidate)
    exact = bool((beta1 * candidate >= thresholds).all()) and bool(
        (beta1 * torch.nextafter(candidate, -inf) < thresholds).all()
    )
    return candidate if exact else None


def search_positions(u: Tensor, boundaries: Tensor) -> Tensor:
    """Position p in 0..2n+1 of each u among :func:`interleaved_boundaries`, int32."""
    return bucketize(u, boundaries, right=True, out_int32=True)


def position_codes(positions: Tensor) -> Tensor:
    """Eq. (1)'s code (thresholds at or below u) of a search position."""
    return positions >> 1


def _per_position(table_per_code: Tensor) -> Tensor:
    """Expand a per-code table (n+1,) to the 2n+2 search positions."""
    return table_per_code.repeat_interleave(2)


def threshold_quantize_reference(
    x: Tensor,
    start: Tensor,
    intervals: Tensor,
    beta1: Tensor,
    beta2: Tensor,
    shift: Tensor | None,
    min_interval: float,
) -> Tensor:
    """N2UQ forward with the generalised STE, written with autograd (the readable definition).

    The surrogate g(u) is piecewise linear: 0 up to d_0, Δ·(k + (u - d_k)/a_k)
    inside interval k, 2 from d_n on; gradients reach x, start, intervals and
    beta1 through it. It is continuous, so an interior edge d_k has the slope of
    the interval it opens; d_0 and d_n themselves have none. The forward value is exactly beta2·Δ·q.
    :func:`threshold_quantize` computes the same values and gradients faster.
    """
    n = intervals.numel()
    delta = 2.0 / n
    edges, lengths = interval_edges(start, intervals, min_interval)
    u = threshold_input(x, beta1, shift)
    codes = threshold_codes(u, edges[:-1] + lengths / 2)
    interval = bucketize(u, edges[1:-1], right=True)
    ramp = (u - edges[interval]) / lengths[interval]
    surrogate = delta * (interval.to(u.dtype) + ramp)
    surrogate = torch.where(u <= edges[0], 0.0, torch.where(u >= edges[-1], 2.0, surrogate))
    level = code_levels(codes, n, u.dtype) + (surrogate - surrogate.detach())
    return threshold_output(level, beta2, shift)


class _ThresholdQuantize(torch.autograd.Function):
    """threshold_quantize_reference with hand-written gradients.

    One search over :func:`interleaved_boundaries` gives each element's search
    position p; the forward output follows from the code p >> 1, and backward
    needs only p, x and, from the upstream gradient g, Σ g and Σ g·x per interval
    and Σ g·level: every parameter gradient follows from those in closed form,
    and the input gradient is one more lookup. The per-element work is one pass
    each way (:mod:`adq_fx.kernels`) instead of autograd's twenty.
    """

    @staticmethod
    def forward(ctx, x, start, intervals, beta1, beta2, shift, min_interval):
        n = intervals.numel()
        boundaries = interleaved_boundaries(start, intervals, min_interval)
        levels = code_levels(torch.arange(n + 1, device=x.device), n, x.dtype)  # Δ·q per code
        if shift is None:
            # The output per code, by the reference's own formula: values match it and the
            # converted level table bit for bit.
            code_table = threshold_output(levels, beta2, None)
            positions, out = kernels.threshold_forward(x, boundaries, beta1, code_table)
        else:  # a per-channel output table: elementwise
            positions = search_positions(beta1 * (x + shift), boundaries)
            out = threshold_output(code_levels(position_codes(positions), n, x.dtype), beta2, shift)
        ctx.save_for_backward(x, positions, start, intervals, beta1, beta2, shift, levels)
        ctx.min_interval = min_interval
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, positions, start, intervals, beta1, beta2, shift, levels = ctx.saved_tensors
        delta = 2.0 / intervals.numel()
        edges, lengths = interval_edges(start, intervals, ctx.min_interval)
        slope = beta2 * delta / lengths  # d(output)/du inside interval k
        zero = slope.new_zeros(1)  # positions 0 and 2n+1 lie outside (d_0, d_n)
        input_slope = torch.cat([zero, (slope * beta1).repeat_interleave(2), zero]).to(grad_out.dtype)
        shifted = x if shift is None else x + shift
        level_table = _per_position(levels).to(grad_out.dtype)
        # d(out)/dx per element; per interval k, Σ g and Σ g·(x + shift); Σ g·level (β2's gradient).
        grad_x, g_k, gx_k, g_level = kernels.interval_sums(
            positions, grad_out, shifted, input_slope, level_table
        )
        grad_u_k = slope * g_k
        # Σ_i∈k grad_u_i·ramp_i with ramp = (u - d_k) / a_k, u = beta1·(x + shift).
        ramp_k = slope / lengths * (beta1 * gx_k - edges[:-1] * g_k)
        beyond = grad_u_k.flip(0).cumsum(0).flip(0) - grad_u_k  # Σ over intervals after k
        grad_lengths = -(beyond + ramp_k) * (intervals > ctx.min_interval)
        grad_shift = None
        if shift is not None:
            grad_shift = _sum_to_shape(grad_x, shift.shape) - _sum_to_shape(grad_out, shift.shape)
        return (
            grad_x,
            -grad_u_k.sum().reshape(start.shape),
            grad_lengths.to(intervals.dtype),
            (slope * gx_k).sum().reshape(beta1.shape),
            g_level.reshape(beta2.shape),
            grad_shift,
            None,
        )


def _sum_to_shape(tensor: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (leading and size-1 dims)."""
    lead = tensor.dim() - len(shape)
    dims = [*range(lead), *(lead + i for i, size in enumerate(shape) if size == 1)]
    return tensor.sum(dim=dims, keepdim=True).reshape(shape) if dims else tensor


def threshold_quantize(
    x: Tensor,
    start: Tensor,
    intervals: Tensor,
    beta1: Tensor,
    beta2: Tensor,
    shift: Tensor | None,
    min_interval: float,
) -> Tensor:
    """N2UQ threshold quantizer with the generalised STE (see the reference above).

    ``shift`` is None (unsigned input) or broadcastable to x (signed input).
    """
    return _ThresholdQuantize.apply(x, start, intervals, beta1, beta2, shift, min_interval)
