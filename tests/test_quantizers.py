"""Module behaviour of the two quantizers: buffers, training/eval, gradients, checkpoints, configs."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from adq_fx import functional as qf
from adq_fx.config import CodebookWeightConfig, ThresholdActivationConfig
from adq_fx.quantizers import CodebookWeightQuantizer, ThresholdActivationQuantizer
from adq_fx.quantizers.checkpoint_layout import saved_layout

BUFFERS = ("scale", "codebook", "ema_counts", "ema_sums")


def conv_weight(seed: int = 0, shape: tuple[int, ...] = (4, 3, 3, 3)) -> torch.Tensor:
    channel_scale = torch.linspace(0.1, 2.0, shape[0]).view(-1, *([1] * (len(shape) - 1)))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * channel_scale


def buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in module.named_buffers()}


# ------------------------------------------------------------------------- codebook weights
def test_codebook_buffers_are_in_the_state_dict() -> None:
    quantizer = CodebookWeightQuantizer(CodebookWeightConfig(bits=3, levels="alg1"), conv_weight())
    state = quantizer.state_dict()
    for name in BUFFERS:
        assert name in state
        assert torch.equal(state[name], getattr(quantizer, name))
    assert state["codebook"].shape == (7,)
    assert state["scale"].shape == (4,)
    assert state["ema_counts"].shape == state["ema_sums"].shape == (7,)
    assert saved_layout(state["_extra_state"]) == {"method": "adq", "bits": 3, "levels": 7}
    # The scale is the per-channel RMS of the weight it was built on.
    torch.testing.assert_close(quantizer.scale, conv_weight().pow(2).mean(dim=(1, 2, 3)).sqrt())


@pytest.mark.parametrize("levels", ["alg1", "full"])
def test_eval_forward_changes_no_buffer(levels: str) -> None:
    weight = conv_weight()
    quantizer = CodebookWeightQuantizer(
        CodebookWeightConfig(bits=3, levels=levels, pin_zero=levels == "alg1", ema_decay=0.5), weight
    ).eval()
    before = buffers(quantizer)
    for seed in range(3):
        quantizer(conv_weight(seed + 1))
        quantizer.commitment(conv_weight(seed + 1))
    after = buffers(quantizer)
    assert before.keys() == after.keys() == set(BUFFERS)
    for name in before:
        assert torch.equal(before[name], after[name]), name


@settings(max_examples=10, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=2, max_value=4),
    st.sampled_from([0.0, 0.5, 0.99]),
)
def test_train_forward_moves_the_codebook_and_keeps_it_sorted(seed, bits, decay) -> None:
    weight = conv_weight(seed)
    config = CodebookWeightConfig(bits=bits, levels="alg1", ema_decay=decay)  # a zero level to pin
    quantizer = CodebookWeightQuantizer(config, weight).train()
    initial = quantizer.codebook.clone()
    scale_before = quantizer.scale.clone()
    for step in range(3):
        quantizer(weight * (1.0 + 0.2 * step) + 0.05)
        codebook = quantizer.codebook
        assert bool((codebook[1:] >= codebook[:-1]).all())
        assert bool((codebook == 0).any())  # pin_zero keeps the zero level
    assert not torch.equal(quantizer.codebook, initial)
    assert torch.equal(quantizer.scale, scale_before)  # the scale is fixed at prepare time


def test_train_forward_updates_the_ema_statistics_by_the_formula() -> None:
    weight = conv_weight()
    config = CodebookWeightConfig(bits=2, levels="alg1", ema_decay=0.5)
    quantizer = CodebookWeightQuantizer(config, weight).train()
    counts0, sums0 = quantizer.ema_counts.clone(), quantizer.ema_sums.clone()
    normalised = qf.normalise(weight, quantizer.scale)
    step_counts, step_sums = qf.cluster_statistics(normalised, quantizer.codes(weight), 3)
    quantizer(weight)
    torch.testing.assert_close(quantizer.ema_counts, 0.5 * counts0 + 0.5 * step_counts)
    torch.testing.assert_close(quantizer.ema_sums, 0.5 * sums0 + 0.5 * step_sums)
    expected = quantizer.ema_sums / (quantizer.ema_counts + config.eps)  # all alive: warm-started counts
    expected[1] = 0.0  # the zero level is pinned
    torch.testing.assert_close(quantizer.codebook, expected)


def test_learn_codebook_false_never_moves_the_codebook() -> None:
    weight = conv_weight()
    quantizer = CodebookWeightQuantizer(
        CodebookWeightConfig(bits=3, learn_codebook=False, ema_decay=0.0), weight
    ).train()
    before = buffers(quantizer)
    for seed in range(4):
        quantizer(conv_weight(seed + 1) * 3.0)
    for name, value in buffers(quantizer).items():
        assert torch.equal(value, before[name]), name


def test_the_straight_through_gradient_reaches_the_weight() -> None:
    quantizer = CodebookWeightQuantizer(CodebookWeightConfig(bits=3), conv_weight()).train()
    weight = conv_weight(1).requires_grad_()
    quantized = quantizer(weight)
    assert quantized.requires_grad
    (grad,) = torch.autograd.grad(quantized.sum(), weight)
    assert torch.equal(grad, torch.ones_like(grad))
    assert all(not b.requires_grad and b.grad is None for b in quantizer.buffers())


def test_commitment_gradient_reaches_the_weight_only() -> None:
    config = CodebookWeightConfig(bits=3, commitment_beta=0.25, commitment_units="channel")  # eq. (3)
    quantizer = CodebookWeightQuantizer(config, conv_weight())
    weight = conv_weight(1).requires_grad_()
    loss = quantizer.commitment(weight)
    assert loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert weight.grad is not None and bool((weight.grad != 0).any())
    assert quantizer.codebook.grad is None and not quantizer.codebook.requires_grad
    # beta * mean((sg(q) - w')^2) and its gradient, by hand.
    normalised = qf.normalise(weight.detach(), quantizer.scale)
    target = quantizer.codebook[qf.nearest_codes(normalised, quantizer.codebook)]
    torch.testing.assert_close(loss.detach(), 0.25 * (target - normalised).pow(2).mean())
    by_hand = 0.25 * 2 * (normalised - target) / normalised.numel() / quantizer.scale.view(-1, 1, 1, 1)
    torch.testing.assert_close(weight.grad, by_hand)


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 6),
    per_channel=st.integers(1, 40),
    log_scales=st.lists(st.floats(-4.0, 1.0), min_size=6, max_size=6),
    seed=st.integers(0, 2**16),
)
@example(channels=1, per_channel=3, log_scales=[0.0] * 6, seed=1)  # codebook entries at weights' values
def test_layer_units_commitment_is_the_layer_rms_term_with_its_gradient(
    channels: int, per_channel: int, log_scales: list[float], seed: int
) -> None:
    """commitment_units="layer": beta * mean((ŵ - w)^2) / mean(s^2), value and gradient, any scales."""
    spread = torch.tensor(log_scales[:channels], dtype=torch.float64).exp2().view(-1, 1)
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(channels, per_channel, generator=generator, dtype=torch.float64) * spread).float()
    config = CodebookWeightConfig(bits=2, commitment_beta=0.5, commitment_units="layer", learn_codebook=False)
    quantizer = CodebookWeightQuantizer(config, weight).train()
    leaf = weight.clone().requires_grad_()
    quantized, loss = quantizer.quantize(leaf)
    (grad,) = torch.autograd.grad(loss, leaf)
    reference = weight.double().clone().requires_grad_()
    scale = quantizer.scale.double().view(-1, 1)
    by_hand = 0.5 * (reference - quantized.detach().double()).pow(2).mean() / scale.pow(2).mean()
    (grad_by_hand,) = torch.autograd.grad(by_hand, reference)
    torch.testing.assert_close(loss.double(), by_hand.detach(), rtol=1e-5, atol=1e-9)
    # float32 residuals: an entry at a weight's own value leaves ~1e-7 of that weight, so the gradient
    # is compared against the size of one unit-RMS residual's gradient, 2 beta / (N rms(s))
    unit = 2 * 0.5 / (weight.numel() * scale.pow(2).mean().sqrt().item())
    torch.testing.assert_close(grad.double(), grad_by_hand, rtol=1e-4, atol=1e-5 * unit)


@pytest.mark.parametrize(("units", "stable"), [("channel", False), ("layer", True)])
def test_sgd_on_the_commitment_is_stable_on_a_near_dead_channel_in_layer_units(units, stable) -> None:
    """A channel at 1/1000 of its layer's RMS (as in pre-trained ResNet-20s): SGD with momentum at
    lr 0.02 on beta 1 * eq. (3) in per-channel units steps it far past the codebook and diverges;
    in the layer's units the same optimizer leaves it near its codes."""
    weight = torch.randn(4, 16, 3, 3, generator=torch.Generator().manual_seed(0))
    weight[0] *= 1e-3
    config = CodebookWeightConfig(bits=2, commitment_beta=1.0, commitment_units=units, learn_codebook=False)
    quantizer = CodebookWeightQuantizer(config, weight).train()
    parameter = nn.Parameter(weight.clone())
    optimizer = torch.optim.SGD([parameter], lr=0.02, momentum=0.9, nesterov=True)
    for _ in range(50):
        optimizer.zero_grad()
        quantizer.quantize(parameter)[1].backward()
        optimizer.step()
    growth = (parameter.detach()[0].abs().max() / weight[0].abs().max()).item()
    assert (growth < 2.0) is stable, f"near-dead channel grew {growth:.3g}x under {units!r} units"


def test_a_training_forward_returns_its_commitment_and_a_fresh_one_follows_the_moved_codebook() -> None:
    config = CodebookWeightConfig(bits=3, commitment_beta=0.5, commitment_units="channel")
    quantizer = CodebookWeightQuantizer(config, conv_weight())
    weight = conv_weight(1).requires_grad_()
    codebook_before = quantizer.codebook.clone()
    quantized, loss = quantizer.train().quantize(weight)  # the explicit output of this forward
    assert not torch.equal(quantizer.codebook, codebook_before)  # the EMA moved it
    (quantized.sum() + loss).backward()
    # the forward's assignment and codebook (before its EMA step), and STE gradient 1 plus eq. (3)'s
    normalised = qf.normalise(weight.detach(), quantizer.scale)
    target = codebook_before[qf.nearest_codes(normalised, codebook_before)]
    torch.testing.assert_close(loss.detach(), 0.5 * (target - normalised).pow(2).mean())
    by_hand = 1 + 0.5 * 2 * (normalised - target) / normalised.numel() / quantizer.scale.view(-1, 1, 1, 1)
    torch.testing.assert_close(weight.grad, by_hand)
    # commitment() computes afresh: the codebook as it is now
    fresh = quantizer.commitment(weight)
    target = quantizer.codebook[qf.nearest_codes(normalised, quantizer.codebook)]
    torch.testing.assert_close(fresh.detach(), 0.5 * (target - normalised).pow(2).mean())
    assert float(quantizer.eval().quantize(weight)[1]) == 0.0  # no commitment term in evaluation


def test_commitment_loss_takes_each_training_forwards_term_once_then_computes_afresh() -> None:
    from adq_fx import commitment_loss, default_qconfig_mapping, prepare_adq
    from tests.models import TinyResNet, images

    x = images(4)
    prepared = prepare_adq(TinyResNet(), default_qconfig_mapping(3), x)
    layers = [m for m in prepared.modules() if hasattr(m, "take_commitment")]
    prepared(x)
    recorded = [m._commitment for m in layers]
    assert all(t is not None and t.requires_grad for t in recorded)
    expected = torch.stack([t for t in recorded]).sum()
    assert torch.equal(commitment_loss(prepared), expected)  # the forward's own terms, no second search
    assert all(m._commitment is None for m in layers)  # taken once
    fresh = torch.stack([m.weight_quantizer.commitment(m.weight) for m in layers]).sum()
    torch.testing.assert_close(commitment_loss(prepared), fresh)  # then afresh
    prepared.eval()(x)
    assert all(m._commitment is None for m in layers)  # evaluation records nothing


def test_a_compiled_model_records_its_commitment_too_so_commitment_loss_searches_nothing() -> None:
    from adq_fx import commitment_loss, default_qconfig_mapping, prepare_adq
    from tests.models import TinyResNet, images

    x = images(4)
    prepared = prepare_adq(TinyResNet(), default_qconfig_mapping(3), x)
    prepared(x)  # the first-batch inits, outside the compiled region
    layers = [m for m in prepared.modules() if hasattr(m, "take_commitment")]
    commitment_loss(prepared)  # nothing left recorded
    compiled = torch.compile(prepared, backend="eager")  # dynamo's graph capture, no code generation
    compiled(x)
    recorded = [m._commitment for m in layers]
    assert all(t is not None and t.requires_grad for t in recorded)  # set inside the compiled forward
    assert torch.equal(commitment_loss(prepared), torch.stack(recorded).sum())


def test_commitment_is_zero_for_weights_on_the_codebook() -> None:
    quantizer = CodebookWeightQuantizer(CodebookWeightConfig(bits=3), conv_weight())
    picks = torch.randint(0, 7, (4, 3, 3, 3), generator=torch.Generator().manual_seed(1))
    on_codebook = quantizer.scale.view(-1, 1, 1, 1) * quantizer.codebook[picks]
    loss = quantizer.commitment(on_codebook)
    # (s * c) / s is c up to one rounding, so "zero" is up to float32 rounding.
    assert 0.0 <= loss.item() < 1e-12
    assert quantizer.commitment(conv_weight(2)).item() > 1e-4  # and it can be non-zero


def test_normal_init_is_deterministic_per_seed_and_has_zero_when_pinned() -> None:
    weight = conv_weight()

    def codebook(**kwargs: object) -> torch.Tensor:
        config = CodebookWeightConfig(init="normal", **{"levels": "alg1", **kwargs})
        return CodebookWeightQuantizer(config, weight).codebook

    first, again, other = codebook(bits=3, seed=7), codebook(bits=3, seed=7), codebook(bits=3, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    for cb in (first, other):
        assert cb.shape == (7,)
        assert bool((cb[1:] >= cb[:-1]).all())
        assert int((cb == 0).sum()) == 1
    free = codebook(bits=3, seed=7, levels="full", pin_zero=False)
    assert free.shape == (8,)
    assert not bool((free == 0).any())
    assert torch.equal(free, torch.randn(8, generator=torch.Generator().manual_seed(7)).sort().values)


def test_loading_a_three_bit_state_into_a_two_bit_quantizer_names_the_module_and_the_bits() -> None:
    weight = conv_weight()
    saved = nn.Module()
    saved.layer = CodebookWeightQuantizer(CodebookWeightConfig(bits=3), weight)
    target = nn.Module()
    target.layer = CodebookWeightQuantizer(CodebookWeightConfig(bits=2), weight)
    before = buffers(target)
    with pytest.raises(ValueError) as info:
        target.load_state_dict(saved.state_dict())
    message = str(info.value)
    assert "layer" in message
    assert message.startswith("layer: ")  # the module's name, not just the word in the advice
    assert "'bits': 3" in message and "'bits': 2" in message
    for name, value in buffers(target).items():  # nothing was half-loaded
        assert torch.equal(value, before[name]), name


def test_a_nested_quantizer_is_named_by_its_full_prefix() -> None:
    weight = conv_weight()
    saved, target = nn.Sequential(nn.Module()), nn.Sequential(nn.Module())
    saved[0].layer = CodebookWeightQuantizer(CodebookWeightConfig(bits=3), weight)
    target[0].layer = CodebookWeightQuantizer(CodebookWeightConfig(bits=2), weight)
    with pytest.raises(ValueError, match=r"^0\.layer: the state_dict was saved with .*'bits': 3"):
        target.load_state_dict(saved.state_dict())


def test_a_same_bits_state_dict_round_trips() -> None:
    weight = conv_weight()
    source = CodebookWeightQuantizer(CodebookWeightConfig(bits=3, ema_decay=0.0), weight).train()
    source(conv_weight(3))
    target = CodebookWeightQuantizer(CodebookWeightConfig(bits=3), conv_weight(5))
    target.load_state_dict(source.state_dict())
    for name in BUFFERS:
        assert torch.equal(getattr(target, name), getattr(source, name)), name


# ---------------------------------------------------------------------- threshold activations
def activation_quantizer(
    bits: int = 3, *, signed: bool = False, channels: int = 3
) -> ThresholdActivationQuantizer:
    """N2UQ's fixed start (init="uniform"): the reference point of the tests below."""
    return ThresholdActivationQuantizer(
        ThresholdActivationConfig(bits=bits, init="uniform"),
        signed=signed,
        num_channels=channels,
        channel_dim=1,
    )


def test_threshold_parameters_all_get_gradients() -> None:
    quantizer = activation_quantizer(3)
    x = torch.linspace(-0.5, 2.5, 2 * 3 * 20).reshape(2, 3, 20)
    quantizer(x).pow(2).sum().backward()
    for name in ("start", "intervals", "beta1", "beta2"):
        grad = getattr(quantizer, name).grad
        assert grad is not None, name
        assert bool((grad != 0).any()), name
    assert quantizer.shift is None
    assert {n for n, _ in quantizer.named_parameters()} == {"start", "intervals", "beta1", "beta2"}


def test_signed_quantizer_has_a_per_channel_shift_and_keeps_negative_inputs() -> None:
    quantizer = activation_quantizer(3, signed=True, channels=3)
    assert isinstance(quantizer.shift, nn.Parameter)
    assert quantizer.shift.shape == (3,)
    step = 2.0 / 7
    x = torch.full((2, 3, 4, 4), -0.5)
    out = quantizer(x)
    assert bool((out < 0).all())  # not clipped to 0
    assert bool(((out - x).abs() <= step).all())
    # Every value in [-1, 1] is within half a step of its output at init.
    x = torch.linspace(-1.0, 1.0, 3 * 50).reshape(1, 3, 50)
    assert bool(((quantizer(x) - x).abs() <= step / 2 + 1e-6).all())
    # The shift is per channel and learns.
    quantizer(x).sum().backward()
    assert quantizer.shift.grad is not None and quantizer.shift.grad.shape == (3,)


def test_unsigned_quantizer_clips_negative_inputs_to_zero() -> None:
    out = activation_quantizer(3)(torch.full((2, 3), -0.5))
    assert torch.equal(out, torch.zeros_like(out))


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.floats(min_value=-3.0, max_value=3.0, width=32), min_size=6, max_size=6),
    st.integers(min_value=2, max_value=5),
    st.booleans(),
)
def test_eval_and_train_forward_are_identical(values, bits, signed) -> None:
    quantizer = activation_quantizer(bits, signed=signed, channels=3)
    with torch.no_grad():
        quantizer.intervals.mul_(torch.linspace(0.5, 1.5, quantizer.intervals.numel()))
        quantizer.beta2.fill_(1.3)
    x = torch.tensor(values).reshape(2, 3)
    state = {k: v.clone() for k, v in quantizer.state_dict().items() if isinstance(v, torch.Tensor)}
    train_out = quantizer.train()(x)
    eval_out = quantizer.eval()(x)
    assert torch.equal(train_out, eval_out)
    assert torch.equal(quantizer.train()(x), train_out)
    for name, value in quantizer.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, state[name]), name
    assert list(quantizer.buffers()) == []


def test_loading_a_threshold_state_with_other_bits_names_the_module() -> None:
    saved, target = nn.Module(), nn.Module()
    saved.act = activation_quantizer(4)
    target.act = activation_quantizer(2)
    with pytest.raises(ValueError, match=r"^act: .*'bits': 4.*'bits': 2"):
        target.load_state_dict(saved.state_dict())


# ---------------------------------------------------------------------------- config checks
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: CodebookWeightConfig(bits=1), "bits=1"),
        (lambda: CodebookWeightConfig(bits=9), "bits=9"),
        (lambda: CodebookWeightConfig(bits=True), "bits=True"),
        (lambda: CodebookWeightConfig(bits=3.0), "bits=3.0"),
        (lambda: CodebookWeightConfig(ema_decay=1.5), "ema_decay=1.5"),
        (lambda: CodebookWeightConfig(ema_decay=-0.1), "ema_decay=-0.1"),
        (lambda: CodebookWeightConfig(levels="full", pin_zero=True), "pin_zero"),
        (lambda: CodebookWeightConfig(levels="half"), "levels='half'"),
        (lambda: CodebookWeightConfig(eps=0.0), "eps=0.0"),
        (lambda: CodebookWeightConfig(commitment_units="tensor"), "commitment_units='tensor'"),
        (lambda: ThresholdActivationConfig(bits=0), "bits=0"),
        (lambda: ThresholdActivationConfig(min_interval=0.0), "min_interval=0.0"),
        (lambda: ThresholdActivationConfig(init="lsq"), "init='lsq'"),
    ],
)
def test_invalid_configs_raise_naming_the_field(make, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)) as info:
        make()
    owner = str(info.value).split("(")[0]
    assert owner in {"CodebookWeightConfig", "ThresholdActivationConfig"}


def test_full_levels_without_pinning_is_valid() -> None:
    config = CodebookWeightConfig(bits=2, levels="full", pin_zero=False)
    assert config.num_levels == 4
    default, paper = CodebookWeightConfig(bits=2), CodebookWeightConfig(bits=2, levels="alg1")
    assert (default.num_levels, default.pin_zero) == (4, False)  # all codes, nothing to pin
    assert (paper.num_levels, paper.pin_zero) == (3, True)  # Alg. 1: 2^b - 1 levels, zero pinned
    with pytest.raises(ValueError, match=r"levels='full', pin_zero=True"):
        CodebookWeightConfig(bits=2, pin_zero=True)
    assert ThresholdActivationConfig(bits=2).num_levels == 4


# ------------------------------------------------------------------- first-batch threshold init
def _first_batch_quantizer(signed: bool = False) -> ThresholdActivationQuantizer:
    config = ThresholdActivationConfig(bits=3, init="first_batch")
    return ThresholdActivationQuantizer(config, signed=signed, num_channels=2, channel_dim=1)


@settings(max_examples=25, deadline=None)
@given(st.floats(min_value=0.01, max_value=100.0), st.integers(min_value=0, max_value=2**16), st.booleans())
def test_first_batch_init_stretches_the_uniform_quantizer_over_lsq_range(scale, seed, signed) -> None:
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(seed)).abs() * scale
    q = _first_batch_quantizer(signed)
    if signed:
        x = x * torch.where(torch.arange(x.numel()).view(x.shape) % 3 == 0, -1.0, 1.0)
    out = q(x)
    clip = 2 * x.abs().mean() * 7**0.5  # LSQ's 2·mean|x|·sqrt(n), n = 7 intervals at 3 bits
    if signed:  # the range is centred: thresholds cover [-clip/2, clip/2]
        torch.testing.assert_close(q.shift.detach(), torch.full((2,), float(clip / 2)))
    shifted = x if q.shift is None else x + q.shift.view(1, -1, 1, 1)
    torch.testing.assert_close(q.beta1.detach(), 2 / clip)
    torch.testing.assert_close(q.beta2.detach(), clip / 2)
    assert bool(q.initialized)
    # still N2UQ's uniform quantizer, on [0, clip] of the input, returning input units
    codes = (q.beta1 * shifted[..., None] >= q.thresholds()).sum(-1)
    expected = q.beta2 * (codes.float() * (2.0 / 7))
    expected = expected if q.shift is None else expected - q.shift.view(1, -1, 1, 1)
    assert torch.equal(out.detach(), expected.detach())
    assert 0 < int(codes.max()) <= 7  # the range covers the data: codes are used


def test_first_batch_init_runs_once_and_survives_a_state_dict_round_trip() -> None:
    q = _first_batch_quantizer()
    q(torch.rand(2, 2, 4, 4))
    beta1 = q.beta1.detach().clone()
    q(torch.rand(2, 2, 4, 4) * 50)  # a second batch does not re-initialise
    assert torch.equal(q.beta1.detach(), beta1)
    fresh = _first_batch_quantizer()
    fresh.load_state_dict(q.state_dict())
    fresh(torch.rand(2, 2, 4, 4) * 50)  # loaded: already initialised
    assert torch.equal(fresh.beta1.detach(), beta1)


def test_uniform_init_keeps_the_reference_start_and_its_state_dict_keys() -> None:
    q = ThresholdActivationQuantizer(
        ThresholdActivationConfig(bits=3, init="uniform"), signed=False, num_channels=2, channel_dim=1
    )
    q(torch.rand(2, 2, 4, 4) * 50)
    assert q.beta1.item() == 1.0 and q.beta2.item() == 1.0
    assert "initialized" not in q.state_dict()  # checkpoints of a uniform-init quantizer keep their keys


@pytest.mark.parametrize("init", ["auto", "first_batch"])
def test_a_batch_without_signal_keeps_the_uniform_start(init: str) -> None:
    assert ThresholdActivationConfig().init == "auto"
    q = ThresholdActivationQuantizer(
        ThresholdActivationConfig(bits=3, init=init), signed=False, num_channels=2, channel_dim=1
    )
    q(torch.zeros(2, 2, 4, 4))  # dead inputs say nothing about the range
    assert q.beta1.item() == 1.0 and q.beta2.item() == 1.0 and bool(q.initialized)
    assert q.started_from == "fixed"


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e3), st.integers(min_value=0, max_value=2**16), st.booleans())
def test_auto_init_keeps_the_fixed_start_where_the_data_fits_it_and_else_covers_the_data(
    scale, seed, signed
) -> None:
    x = torch.rand(4, 2, 5, 5, generator=torch.Generator().manual_seed(seed)) * scale
    if signed:
        x = x * torch.where(torch.arange(x.numel()).view(x.shape) % 3 == 0, -1.0, 1.0)
    q = ThresholdActivationQuantizer(
        ThresholdActivationConfig(bits=3, init="auto"), signed=signed, num_channels=2, channel_dim=1
    )
    out = q(x)
    q99 = float(torch.quantile(x.abs().flatten(), 0.99))
    span = 2 * q99 if signed else q99  # the width of the input range the data occupies
    tolerance = ThresholdActivationConfig.AUTO_START_TOLERANCE
    if 2 / tolerance <= span <= 2 * tolerance:  # N2UQ's [0, 2] (signed [-1, 1]) fits: kept as is
        assert q.started_from == "fixed"
        assert q.beta1.item() == 1.0 and q.beta2.item() == 1.0
        assert q.shift is None or torch.equal(q.shift.detach(), torch.ones(2))
    else:  # stretched over the data: q99 lands on the top of the range
        assert q.started_from == "data"
        torch.testing.assert_close(q.beta1.detach(), torch.tensor(2 / span), rtol=1e-5, atol=0)
        torch.testing.assert_close(q.beta2.detach(), torch.tensor(span / 2), rtol=1e-5, atol=0)
        if signed:
            torch.testing.assert_close(q.shift.detach(), torch.full((2,), span / 2), rtol=1e-5, atol=0)
    codes = torch.unique(out.detach()).numel()
    # Whatever the scale, the data keeps its signal. Kept at the fixed start, it spans at least
    # 1/AUTO_START_TOLERANCE of the range: 7/4 of the seven 3-bit steps, so two codes at the edge
    # (a scale of 0.28125, signed, sits there); stretched over the data, it spans all of them.
    assert codes >= (2 if q.started_from == "fixed" else 3), (scale, codes)


def test_magnitude_quantile_samples_large_tensors_but_is_exact_on_small_ones() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert float(qf.magnitude_quantile(x, 0.99)) == pytest.approx(float(torch.quantile(x.abs(), 0.99)))
    big = torch.rand(3 * 2**20 + 7, generator=torch.Generator().manual_seed(1))
    assert float(qf.magnitude_quantile(big, 0.5, max_samples=2**16)) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("decay", [0.5, 0.99])
def test_a_cold_started_codebook_jumps_to_its_cluster_means_and_a_warm_one_does_not(decay) -> None:
    """warm_start=False: zero EMA statistics, so step one's used entries are their clusters' means."""
    weight = conv_weight(3, (8, 4, 3, 3))
    cold = CodebookWeightQuantizer(
        CodebookWeightConfig(bits=3, ema_decay=decay, warm_start=False, kmeans_init_steps=0), weight
    )
    warm = CodebookWeightQuantizer(CodebookWeightConfig(bits=3, ema_decay=decay, kmeans_init_steps=0), weight)
    assert torch.equal(cold.codebook, warm.codebook) and not cold.ema_counts.any()
    moved = weight * 1.3  # a step whose cluster means differ from the init
    normalised = qf.normalise(moved, cold.scale)
    codes = qf.nearest_codes(normalised, cold.codebook)
    counts, sums = qf.cluster_statistics(normalised, codes, cold.codebook.numel())
    used = counts > 0
    cold.train()(moved)
    warm.train()(moved)
    torch.testing.assert_close(cold.codebook[used], (sums / counts)[used], rtol=1e-4, atol=1e-6)
    warm_gap = (warm.codebook[used] - (sums / counts)[used]).abs().max()
    assert warm_gap > 100 * (cold.codebook[used] - (sums / counts)[used]).abs().max()


def test_warm_start_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match=r"warm_start=0\) must be True or False"):
        CodebookWeightConfig(warm_start=0)  # type: ignore[arg-type]


def test_train_config_sets_the_codebook_ema_knobs() -> None:
    from types import SimpleNamespace

    from adq_fx.train.config import TrainConfig
    from adq_fx.train.engine import Runner

    config = TrainConfig(dataset="digits", codebook_ema_decay=0.9, codebook_warm_start=False)
    weight = Runner.base_config(SimpleNamespace(config=config)).weight  # type: ignore[arg-type]
    assert isinstance(weight, CodebookWeightConfig)
    assert (weight.ema_decay, weight.warm_start) == (0.9, False)
