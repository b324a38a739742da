"""Property tests of the pure quantizer math in :mod:`adq_fx.functional`."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adq_fx import functional as qf
from adq_fx.config import CodebookWeightConfig
from adq_fx.quantizers import CodebookWeightQuantizer

FAST = settings(max_examples=50, deadline=None)
SLOW = settings(max_examples=25, deadline=None)

# No subnormals: an entry at +-1.4e-45 next to the zero level is the adjacent-entries case.
finite = st.floats(min_value=-100.0, max_value=100.0, width=32, allow_subnormal=False)
unit = st.floats(min_value=-4.0, max_value=4.0, width=32, allow_subnormal=False)
bits = st.integers(min_value=2, max_value=8)
MIN_INTERVAL = 1e-3


def tensor(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


@st.composite
def separated_codebooks(draw: st.DrawFn, min_size: int = 1, max_size: int = 16) -> torch.Tensor:
    """Sorted codebooks whose distinct entries are more than a few ulps apart (duplicates allowed).

    Entries a handful of ulps apart are a separate, known edge case (tested separately below).
    """
    values = sorted(draw(st.lists(finite, min_size=min_size, max_size=max_size)))
    kept: list[float] = []
    for v in values:
        if kept and v != kept[-1] and abs(v - kept[-1]) <= 1e-5 * max(abs(v), abs(kept[-1]), 1e-30):
            continue
        kept.append(v)
    return tensor(kept)


# ----------------------------------------------------------------------------- nearest_codes
@FAST
@given(st.lists(finite, min_size=1, max_size=40), separated_codebooks())
def test_nearest_codes_is_the_brute_force_nearest_entry(weights, codebook) -> None:
    w = tensor(weights)
    codes = qf.nearest_codes(w, codebook)
    assert codes.dtype == torch.int32 and codes.shape == w.shape
    assert bool(((codes >= 0) & (codes < codebook.numel())).all())
    distance = (w[:, None] - codebook[None, :]).abs()
    chosen = distance.gather(1, codes[:, None]).squeeze(1)
    # A value exactly on a midpoint may go either way: compare distances, not indices.
    assert torch.equal(chosen, distance.min(dim=1).values), (w, codebook, codes)


@FAST
@given(st.lists(unit, min_size=6, max_size=6), separated_codebooks(min_size=2))
def test_nearest_codes_keeps_the_input_shape(weights, codebook) -> None:
    w = tensor(weights).reshape(2, 3, 1)
    codes = qf.nearest_codes(w, codebook)
    assert codes.shape == (2, 3, 1)
    assert torch.equal(codes.reshape(-1), qf.nearest_codes(w.reshape(-1), codebook))


@FAST
@given(separated_codebooks(min_size=2))
def test_values_on_the_computed_midpoints_go_to_an_entry_at_most_an_ulp_from_the_nearest(codebook) -> None:
    midpoints = qf.codebook_midpoints(codebook)
    codes = qf.nearest_codes(midpoints, codebook)
    distance = (midpoints.double()[:, None] - codebook.double()[None, :]).abs()
    chosen = distance.gather(1, codes[:, None]).squeeze(1)
    ulp = torch.nextafter(midpoints.abs(), torch.tensor(float("inf"))) - midpoints.abs()
    # (a + b) / 2 is rounded, so "on the midpoint" is exact only up to the rounding of the boundary.
    assert bool((chosen - distance.min(dim=1).values <= ulp.double()).all())
    assert bool(((codes == torch.arange(codebook.numel() - 1)) | (codebook[codes] == codebook[:-1])).all())


def test_nearest_codes_midpoint_goes_to_the_lower_entry() -> None:
    codebook = tensor([-1.0, 0.0, 1.0])
    assert qf.nearest_codes(tensor([-0.5, 0.5]), codebook).tolist() == [0, 1]


def test_an_entry_adjacent_to_its_neighbour_still_maps_to_itself() -> None:
    low = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    codebook = torch.stack([low, torch.nextafter(low, torch.tensor(2.0))])  # 1 + ulp, 1 + 2 ulp
    assert qf.nearest_codes(codebook, codebook).tolist() == [0, 1]


# ------------------------------------------------------------------------ quantile / codebook
@FAST
@given(
    st.lists(finite, min_size=1, max_size=30),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8),
)
def test_quantile_matches_torch_quantile(values, probs) -> None:
    x = tensor(values)
    p = tensor(probs)
    expected = torch.quantile(x.double(), p.double()).float()
    torch.testing.assert_close(qf.quantile(x, p), expected, rtol=1e-5, atol=1e-5 * (1 + x.abs().max().item()))


@FAST
@given(st.lists(finite, min_size=1, max_size=60), bits)
def test_alg1_codebook_is_sorted_with_two_to_the_b_minus_one_levels_and_one_zero(values, b) -> None:
    w = tensor(values)
    assume(bool((w != 0).any()))
    codebook = qf.quantile_codebook(w, b)
    assert codebook.shape == (2**b - 1,)
    assert codebook.numel() <= 2**b
    assert bool((codebook[1:] >= codebook[:-1]).all())
    assert int((codebook == 0).sum()) == 1
    # Quantiles of |w| per side stay inside the data's range.
    assert codebook.abs().max() <= w.abs().max()


@FAST
@given(st.lists(finite, min_size=1, max_size=60), bits)
def test_full_codebook_has_two_to_the_b_sorted_levels(values, b) -> None:
    w = tensor(values)
    assume(bool(w.ne(0).any()))
    codebook = qf.quantile_codebook(w, b, full_levels=True)
    assert codebook.shape == (2**b,)
    assert bool((codebook[1:] >= codebook[:-1]).all())
    assert w.min() <= codebook.min() and codebook.max() <= w.max()


@FAST
@given(
    st.lists(st.floats(min_value=1 / 1024, max_value=100.0, width=32), min_size=1, max_size=40),
    bits,
    st.booleans(),
)
def test_one_signed_weights_give_a_symmetric_codebook(values, b, negate) -> None:
    w = tensor(values)
    if negate:
        w = -w
    codebook = qf.quantile_codebook(w, b)
    assert codebook.shape == (2**b - 1,)
    assert torch.equal(codebook, -codebook.flip(0))
    assert bool((codebook[: codebook.numel() // 2] < 0).all())


@FAST
@given(st.integers(min_value=1, max_value=20), bits, st.booleans(), st.booleans())
def test_all_zero_weights_raise(size, b, negative_zero, full_levels) -> None:
    w = torch.full((size,), -0.0 if negative_zero else 0.0)
    with pytest.raises(ValueError, match="all weights are zero"):
        qf.quantile_codebook(w, b, full_levels=full_levels)


def test_codebook_examples() -> None:
    w = tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
    assert qf.quantile_codebook(w, 2).tolist() == [-2.0, 0.0, 2.0]
    assert qf.quantile_codebook(w, 3).tolist() == [-2.5, -2.0, -1.5, 0.0, 1.5, 2.0, 2.5]
    # Full levels: quantiles at 1/5 .. 4/5 of the whole distribution, no zero for symmetric data.
    assert qf.quantile_codebook(torch.arange(11.0) - 5, 2, full_levels=True).tolist() == [
        -3.0,
        -1.0,
        1.0,
        3.0,
    ]


# ----------------------------------------------------------------------------- idempotence
@FAST
@given(st.lists(finite, min_size=1, max_size=40), separated_codebooks())
def test_quantizing_a_quantized_value_is_the_identity(weights, codebook) -> None:
    quantized = codebook[qf.nearest_codes(tensor(weights), codebook)]
    assert torch.equal(codebook[qf.nearest_codes(quantized, codebook)], quantized)


@FAST
@given(st.lists(unit, min_size=12, max_size=12), st.lists(unit, min_size=12, max_size=12), bits)
def test_quantize_with_fixed_scale_and_codebook_is_idempotent(init, weights, b) -> None:
    w0 = tensor(init).reshape(3, 4)
    assume(bool((w0 != 0).any()))
    scale = qf.per_channel_rms(w0)
    codebook = qf.quantile_codebook(qf.normalise(w0, scale), b)
    w = tensor(weights).reshape(3, 4)
    once = qf.denormalise(codebook[qf.nearest_codes(qf.normalise(w, scale), codebook)], scale)
    twice = qf.denormalise(codebook[qf.nearest_codes(qf.normalise(once, scale), codebook)], scale)
    assert torch.equal(once, twice)


@SLOW
@given(
    st.lists(unit, min_size=12, max_size=12),
    st.lists(unit, min_size=12, max_size=12),
    st.integers(min_value=2, max_value=4),
    st.sampled_from(["alg1", "full"]),
)
def test_every_quantized_weight_is_its_channel_scale_times_a_codebook_entry(init, weights, b, levels) -> None:
    w0 = tensor(init).reshape(3, 4)
    assume(bool((w0 != 0).any()))
    config = CodebookWeightConfig(bits=b, levels=levels, pin_zero=levels == "alg1")
    quantizer = CodebookWeightQuantizer(config, w0).eval()
    for w in (w0, tensor(weights).reshape(3, 4)):
        out = quantizer(w)
        candidates = quantizer.scale.view(-1, 1, 1) * quantizer.codebook.view(1, 1, -1)  # (C, 1, K)
        assert bool((out.unsqueeze(-1) == candidates).any(dim=-1).all()), (out, candidates)
        expected = quantizer.scale.view(-1, 1) * quantizer.codebook[quantizer.codes(w)]
        assert torch.equal(out, expected)
        assert torch.equal(quantizer(out), out)  # re-quantizing changes nothing


# --------------------------------------------------------------------------- EMA k-means
@FAST
@given(
    st.lists(unit, min_size=1, max_size=40),
    separated_codebooks(min_size=1, max_size=8),
    st.booleans(),
    st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=9, max_size=9),
)
def test_ema_step_with_zero_decay_moves_used_entries_to_their_cluster_means(
    weights, codebook, pin_zero, old_stats
) -> None:
    if pin_zero:
        codebook = torch.cat([codebook[codebook != 0], codebook.new_zeros(1)]).sort().values
    w = tensor(weights)
    k = codebook.numel()
    eps = 1e-5
    codes = qf.nearest_codes(w, codebook)
    step_counts, step_sums = qf.cluster_statistics(w, codes, k)
    ema_counts, ema_sums = tensor(old_stats[:k]), tensor(old_stats[:k]) * codebook
    new_codebook, new_counts, new_sums = qf.ema_kmeans_step(
        codebook, ema_counts, ema_sums, step_counts, step_sums, decay=0.0, eps=eps, pin_zero=pin_zero
    )
    assert new_codebook.shape == codebook.shape
    assert bool((new_codebook[1:] >= new_codebook[:-1]).all())

    expected = codebook.double().clone()
    for i in range(k):
        members = w[codes == i].double()
        if members.numel():
            expected[i] = members.mean()
        if pin_zero and codebook[i] == 0:
            expected[i] = 0.0
    expected_sorted = expected.sort(stable=True).values
    tolerance = 10 * eps * expected_sorted.abs() + 1e-6 * (1 + w.abs().max().item())
    error = (new_codebook.double() - expected_sorted).abs()
    assert bool((error <= tolerance).all()), (new_codebook, expected)
    # With decay 0 the EMA statistics are this step's, carried along with their entries.
    assert sorted(new_counts.tolist()) == sorted(step_counts.tolist())
    torch.testing.assert_close(new_sums.sort().values, step_sums.sort().values)

    for i in range(k):
        if step_counts[i] == 0:  # dead entries keep their exact value
            assert bool((new_codebook == codebook[i]).any()), (i, codebook, new_codebook)
    if pin_zero:
        assert bool((new_codebook == 0).any())
        zero_index = int((new_codebook == 0).nonzero()[0])
        assert new_codebook[zero_index].item() == 0.0


@FAST
@given(
    st.lists(unit, min_size=1, max_size=40),
    separated_codebooks(min_size=2, max_size=8),
    st.floats(min_value=0.0, max_value=1.0),
    st.booleans(),
)
def test_ema_step_output_is_sorted_with_its_statistics(weights, codebook, decay, pin_zero) -> None:
    w = tensor(weights)
    k = codebook.numel()
    counts0 = torch.arange(1.0, k + 1)
    codes = qf.nearest_codes(w, codebook)
    step_counts, step_sums = qf.cluster_statistics(w, codes, k)
    new_codebook, new_counts, _ = qf.ema_kmeans_step(
        codebook,
        counts0,
        counts0 * codebook,
        step_counts,
        step_sums,
        decay=decay,
        eps=1e-5,
        pin_zero=pin_zero,
    )
    assert bool((new_codebook[1:] >= new_codebook[:-1]).all())
    expected_counts = decay * counts0 + (1 - decay) * step_counts
    assert sorted(new_counts.tolist()) == sorted(expected_counts.tolist())
    if pin_zero and bool((codebook == 0).any()):
        assert bool((new_codebook == 0).any())


def test_cluster_statistics_counts_and_sums_per_entry() -> None:
    w = tensor([-1.0, -0.9, 0.1, 2.0, 3.0])
    codes = qf.nearest_codes(w, tensor([-1.0, 0.0, 1.0, 2.5]))
    counts, sums = qf.cluster_statistics(w, codes, 4)
    assert counts.tolist() == [2.0, 1.0, 0.0, 2.0]
    torch.testing.assert_close(sums, tensor([-1.9, 0.1, 0.0, 5.0]))


# ------------------------------------------------------------------------------ thresholds
@FAST
@given(bits, st.data(), st.floats(min_value=-10.0, max_value=10.0), st.floats(min_value=1e-3, max_value=0.5))
def test_interval_thresholds_are_strictly_increasing_for_any_raw_intervals(
    b, data, start, min_interval
) -> None:
    n = 2**b - 1
    raw = data.draw(st.lists(st.floats(min_value=-2.0, max_value=2.0, width=32), min_size=n, max_size=n))
    thresholds = qf.interval_thresholds(torch.tensor(start), tensor(raw), min_interval)
    assert thresholds.shape == (n,)
    gaps = thresholds[1:] - thresholds[:-1]
    assert bool((gaps > 0).all())
    assert bool((gaps >= 0.5 * min_interval).all())
    # The first threshold is half a (floored) interval above the start.
    torch.testing.assert_close(
        thresholds[0] - start, torch.tensor(max(raw[0], min_interval) / 2), rtol=1e-4, atol=1e-5
    )


@FAST
@given(bits, st.data(), st.floats(min_value=-3.0, max_value=3.0))
def test_threshold_codes_count_the_thresholds_at_or_below(b, data, start) -> None:
    n = 2**b - 1
    raw = data.draw(st.lists(st.floats(min_value=-1.0, max_value=1.0, width=32), min_size=n, max_size=n))
    u = tensor(data.draw(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=30)))
    thresholds = qf.interval_thresholds(torch.tensor(start), tensor(raw), 1e-3)
    codes = qf.threshold_codes(u, thresholds)
    assert codes.dtype == torch.int64
    assert bool(((codes >= 0) & (codes <= n)).all())
    assert torch.equal(codes, (u[:, None] >= thresholds[None, :]).sum(dim=1))


@st.composite
def threshold_params(draw: st.DrawFn, max_bits: int = 5) -> dict:
    b = draw(st.integers(min_value=2, max_value=max_bits))
    n = 2**b - 1
    raw = draw(st.lists(st.floats(min_value=-0.5, max_value=1.0, width=32), min_size=n, max_size=n))
    return {
        "n": n,
        "start": torch.tensor(draw(st.floats(min_value=-1.0, max_value=1.0, width=32))),
        "intervals": tensor(raw),
        "beta1": torch.tensor(draw(st.floats(min_value=0.25, max_value=3.0, width=32))),
        "beta2": torch.tensor(draw(st.floats(min_value=-3.0, max_value=3.0, width=32))),
    }


@FAST
@given(threshold_params(), st.lists(unit, min_size=1, max_size=24), st.booleans(), st.data())
def test_threshold_quantize_forward_is_exactly_beta2_times_uniform_levels(params, xs, signed, data) -> None:
    x = tensor(xs)
    shift = tensor(data.draw(st.lists(unit, min_size=len(xs), max_size=len(xs)))) if signed else None
    n, min_interval = params["n"], 1e-3
    out = qf.threshold_quantize(
        x, params["start"], params["intervals"], params["beta1"], params["beta2"], shift, min_interval
    )
    thresholds = qf.interval_thresholds(params["start"], params["intervals"], min_interval)
    u = params["beta1"] * (x if shift is None else x + shift)
    q = (u[:, None] >= thresholds[None, :]).sum(dim=1)
    assert bool(((q >= 0) & (q <= n)).all())
    expected = params["beta2"] * (q.float() * (2.0 / n))
    if shift is not None:
        expected = expected - shift
    assert torch.equal(out, expected), (out, expected)


@SLOW
@given(threshold_params(max_bits=4), st.lists(unit, min_size=1, max_size=24), st.booleans(), st.data())
def test_fast_threshold_quantize_matches_the_autograd_reference(params, xs, signed, data) -> None:
    x = tensor(xs)
    shift = tensor(data.draw(st.lists(unit, min_size=1, max_size=1))) if signed else None
    upstream = tensor(data.draw(st.lists(unit, min_size=len(xs), max_size=len(xs))))
    results = []
    for fn in (qf.threshold_quantize, qf.threshold_quantize_reference):
        leaves = [
            x.clone().requires_grad_(),
            *(params[k].clone().requires_grad_() for k in ("start", "intervals", "beta1", "beta2")),
        ]
        if shift is not None:
            leaves.append(shift.clone().requires_grad_())
        out = fn(*leaves[:5], leaves[5] if shift is not None else None, MIN_INTERVAL)
        grads = torch.autograd.grad((out * upstream).sum(), leaves, allow_unused=True)
        results.append(
            (
                out.detach(),
                [torch.zeros_like(v) if g is None else g for v, g in zip(leaves, grads, strict=True)],
            )
        )
    (fast, fast_grads), (ref, ref_grads) = results
    assert torch.equal(fast, ref)
    for name, a, r in zip(
        ["x", "start", "intervals", "beta1", "beta2", "shift"], fast_grads, ref_grads, strict=False
    ):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_fast_and_reference_agree_for_an_interval_exactly_at_the_floor() -> None:
    grads = []
    for fn in (qf.threshold_quantize, qf.threshold_quantize_reference):
        intervals = torch.tensor([0.5, MIN_INTERVAL, 0.5], requires_grad=True)
        out = fn(
            torch.tensor([0.9]),
            torch.zeros(()),
            intervals,
            torch.ones(()),
            torch.ones(()),
            None,
            MIN_INTERVAL,
        )
        grads.append(torch.autograd.grad(out.sum(), intervals)[0])
    torch.testing.assert_close(grads[0], grads[1])


@FAST
@given(bits, st.lists(st.floats(min_value=-1.0, max_value=3.0, width=32), min_size=1, max_size=40))
def test_at_init_threshold_quantize_is_uniform_on_zero_two(b, xs) -> None:
    n = 2**b - 1
    step = 2.0 / n
    x = tensor(xs)
    out = qf.threshold_quantize(
        x, torch.zeros(()), torch.full((n,), step), torch.ones(()), torch.ones(()), None, 1e-3
    )
    expected = step * torch.round(x.clamp(0.0, 2.0) / step)
    diff = (out - expected).abs()
    position = x.clamp(0.0, 2.0) / step
    near_tie = ((position - position.floor()) - 0.5).abs() < 1e-4
    ok = (diff <= 1e-6) | (near_tie & ((diff - step).abs() <= 1e-5))
    assert bool(ok.all()), (x[~ok], out[~ok], expected[~ok])
    # Outputs are exact grid values and saturate at 0 and 2.
    codes = qf.threshold_codes(x, qf.interval_thresholds(torch.zeros(()), torch.full((n,), step), 1e-3))
    assert torch.equal(out, codes.float() * step)
    assert bool((out[x <= 0] == 0).all()) and bool((out[x >= 2] == codes.new_tensor(n) * step).all())


@FAST
@given(bits, st.lists(st.floats(min_value=-1.0, max_value=3.0, width=32), min_size=1, max_size=40))
def test_at_init_the_gradient_is_one_inside_zero_two_and_zero_outside(b, xs) -> None:
    n = 2**b - 1
    intervals = torch.full((n,), 2.0 / n)
    edges, _ = qf.interval_edges(torch.zeros(()), intervals, 1e-3)
    x = tensor(xs).requires_grad_()
    out = qf.threshold_quantize(x, torch.zeros(()), intervals, torch.ones(()), torch.ones(()), None, 1e-3)
    (grad,) = torch.autograd.grad(out.sum(), x)
    xd = x.detach()
    on_an_edge = ((xd[:, None] - edges[None, :]).abs() < 1e-5).any(dim=1)  # measure zero: see below
    inside = (xd > 0) & (xd < 2)
    outside = (xd < 0) | (xd > 2)
    assert torch.equal(grad[inside & ~on_an_edge], torch.ones_like(grad[inside & ~on_an_edge]))
    assert bool((grad[outside] == 0).all())


@pytest.mark.parametrize("b", [2, 3])
def test_at_init_the_gradient_is_one_at_interior_edges(b) -> None:
    n = 2**b - 1
    intervals = torch.full((n,), 2.0 / n)
    edges, _ = qf.interval_edges(torch.zeros(()), intervals, 1e-3)
    x = edges[1:-1].clone().requires_grad_()
    out = qf.threshold_quantize(x, torch.zeros(()), intervals, torch.ones(()), torch.ones(()), None, 1e-3)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.ones_like(grad))


# ----------------------------------------------------------------------- straight-through
@FAST
@given(st.lists(finite, min_size=1, max_size=20), st.data())
def test_straight_through_forwards_the_quantized_value_and_passes_the_gradient(xs, data) -> None:
    x = tensor(xs).requires_grad_()
    x_quantized = tensor(data.draw(st.lists(finite, min_size=len(xs), max_size=len(xs)))).requires_grad_()
    upstream = tensor(data.draw(st.lists(finite, min_size=len(xs), max_size=len(xs))))
    y = qf.straight_through(x, x_quantized)
    assert torch.equal(y, x_quantized.detach())
    grad_x, grad_q = torch.autograd.grad(y.sum(), [x, x_quantized], allow_unused=True)
    assert torch.equal(grad_x, torch.ones_like(grad_x))
    assert grad_q is None  # the quantized value is a constant to autograd
    (grad_x,) = torch.autograd.grad(qf.straight_through(x, x_quantized), x, upstream)
    assert torch.equal(grad_x, upstream)


@FAST
@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=200))
def test_code_counts_without_host_sync_equal_bincount(codes) -> None:
    flat = torch.tensor(codes, dtype=torch.int32)
    expected = qf.code_counts(flat, 7, without_host_sync=False)
    assert torch.equal(qf.code_counts(flat, 7, without_host_sync=True), expected)
    assert expected.tolist() == [float(codes.count(k)) for k in range(7)]
