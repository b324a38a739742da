"""Baselines on the same machinery: LSQ (weights and activations) and N2UQ's uniform weights."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adq_fx import (
    ADQConfig,
    ADQConfigMapping,
    ASQActivationConfig,
    LSQActivationConfig,
    LSQWeightConfig,
    POSTWeightConfig,
    ThresholdActivationConfig,
    UniformWeightConfig,
    commitment_loss,
    convert_adq,
    model_size_bits,
    prepare_adq,
    qconfig_mapping_from_map,
    quantization_map,
)
from adq_fx import functional as qf
from adq_fx.nn import AdaptiveStepEncoder, LUTConv2d, StepEncoder, ThresholdEncoder
from adq_fx.quantizers import (
    ASQActivationQuantizer,
    LSQActivationQuantizer,
    LSQWeightQuantizer,
    POSTWeightQuantizer,
    UniformWeightQuantizer,
)
from tests.models import SignedNet, TinyResNet, images
from tests.test_passes import train

FAST = settings(max_examples=40, deadline=None)
bits = st.integers(min_value=2, max_value=8)
values = st.lists(
    st.floats(min_value=-50.0, max_value=50.0, width=32, allow_subnormal=False), min_size=1, max_size=40
)
steps = st.floats(min_value=1 / 1024, max_value=10.0, width=32)

LSQ = ADQConfig(weight=LSQWeightConfig(bits=3), activation=LSQActivationConfig(bits=3))
N2UQ = ADQConfig(weight=UniformWeightConfig(bits=3), activation=ThresholdActivationConfig(bits=3))
POST = ADQConfig(weight=POSTWeightConfig(bits=3), activation=LSQActivationConfig(bits=3))
ASQ_POST = ADQConfig(weight=POSTWeightConfig(bits=3), activation=ASQActivationConfig(bits=3))


# ----------------------------------------------------------------------------- pure functions
@FAST
@given(values, steps, bits, st.booleans())
def test_lsq_values_are_the_step_times_an_integer_in_range(xs, step, b, signed) -> None:
    x, s = torch.tensor(xs), torch.tensor(step)
    q_negative, q_positive = qf.lsq_range(b, signed)
    y = qf.lsq_quantize(x, s, q_negative, q_positive, 1.0)
    level = (y / s).round()
    assert torch.equal(level * s, y)
    assert bool((level >= q_negative).all() and (level <= q_positive).all())
    # idempotent, and the codes reproduce the values through the integer grid
    assert torch.equal(qf.lsq_quantize(y, s, q_negative, q_positive, 1.0), y)
    codes = qf.lsq_codes(x, s, q_negative, q_positive)
    assert torch.equal((codes + q_negative).float() * s, y)


@FAST
@given(values, steps, bits, st.booleans(), st.floats(min_value=0.01, max_value=1.0))
def test_lsq_gradients_are_the_papers(xs, step, b, signed, grad_scale) -> None:
    x = torch.tensor(xs, requires_grad=True)
    s = torch.tensor(step, requires_grad=True)
    q_negative, q_positive = qf.lsq_range(b, signed)
    qf.lsq_quantize(x, s, q_negative, q_positive, grad_scale).sum().backward()
    ratio = x.detach() / s.detach()
    inside = (ratio > q_negative) & (ratio < q_positive)  # a value on the clip edge counts as clipped
    assert torch.equal(x.grad, inside.float())
    expected = torch.where(
        ratio <= q_negative,
        float(q_negative),
        torch.where(ratio >= q_positive, float(q_positive), ratio.round() - ratio),
    )
    assert torch.allclose(s.grad, expected.sum() * grad_scale, rtol=1e-4, atol=1e-4)


def test_uniform_levels_are_mid_rise_without_zero() -> None:
    for b in range(2, 9):
        levels = qf.uniform_levels(b)
        assert levels.numel() == 2**b and levels[0] == -1 and levels[-1] == 1
        assert not bool((levels == 0).any())
        assert torch.allclose(levels.diff(), torch.full((2**b - 1,), 2 / (2**b - 1)), atol=1e-6)


def test_uniform_scale_is_gamma_times_mean_abs() -> None:
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    assert torch.allclose(qf.mean_abs_scale(w, 2), torch.tensor([1.5 * 2.0, 1.5 * 0.5]))


# ----------------------------------------------------------------------------- modules
@FAST
@given(st.integers(min_value=2, max_value=4), st.integers(0, 2**16))
def test_uniform_weight_quantizer_gives_scale_times_level_and_identity_gradient(b, seed) -> None:
    weight = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    quantizer = UniformWeightQuantizer(UniformWeightConfig(bits=b), weight)
    out = quantizer(weight)
    scale = qf.mean_abs_scale(weight, b).view(-1, 1, 1, 1)
    assert torch.equal(out, scale * quantizer.levels()[quantizer.codes(weight)])
    assert quantizer.levels().numel() == 2**b
    out.backward(torch.ones_like(out))
    assert torch.equal(weight.grad, torch.ones_like(weight))  # plain STE, no clipping mask
    assert float(quantizer.commitment(weight)) == 0.0


@pytest.mark.parametrize("b", [2, 3, 4, 8])
def test_post_levels_are_signed_powers_of_the_base_with_zero_and_fit_b_bits(b) -> None:
    levels = qf.post_levels(b, 2**0.5)
    assert levels.numel() == 2**b - 1 <= 2**b
    assert bool((levels.diff() > 0).all()) and levels[0] == -1 and levels[-1] == 1
    assert int((levels == 0).sum()) == 1
    positive = levels[levels > 0].double()
    exponents = -torch.log(positive) / math.log(2**0.5)
    assert torch.allclose(exponents, exponents.round(), atol=1e-4)  # every magnitude is √2^-k
    assert torch.equal(levels, -levels.flip(0))


@FAST
@given(st.integers(min_value=2, max_value=4), st.integers(0, 2**16))
def test_post_weight_quantizer_values_gradients_and_clip_init(b, seed) -> None:
    weight = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    quantizer = POSTWeightQuantizer(POSTWeightConfig(bits=b), weight)
    clip = quantizer.clip.detach().view(-1, 1, 1, 1)
    expected_clip = torch.quantile(weight.detach().abs().reshape(5, -1), 0.99, dim=1)
    assert torch.allclose(quantizer.clip.detach(), expected_clip)
    out = quantizer(weight)
    assert torch.equal(out, clip * quantizer.levels()[quantizer.codes(weight).long()])
    out.backward(torch.ones_like(out))
    inside = (weight.detach() / clip).abs() < 1
    assert torch.equal(weight.grad, inside.float())  # STE inside the clip range, nothing outside
    assert quantizer.clip.grad is not None and bool(torch.isfinite(quantizer.clip.grad).all())


def test_asq_scales_the_lsq_step_per_sample_and_trains_its_adapter() -> None:
    quantizer = ASQActivationQuantizer(
        ASQActivationConfig(bits=3), signed=False, num_channels=16, channel_dim=1
    )
    x = (torch.rand(4, 16, 5, 5) * torch.tensor([1.0, 2.0, 4.0, 8.0]).view(4, 1, 1, 1)).requires_grad_()
    out = quantizer(x)
    assert torch.allclose(quantizer.step.detach(), 2 * x.detach().abs().mean() / math.sqrt(7))
    beta = quantizer.adapter(x.detach())
    assert beta.shape == (4,) and torch.allclose(beta, torch.ones(4), atol=0.1)  # starts near LSQ
    step = (quantizer.step * beta).detach().view(4, 1, 1, 1)
    assert torch.equal(out, torch.round(torch.clamp(x.detach() / step, 0, 7)) * step)
    out.sum().backward()
    adapter_grads = [p.grad for p in quantizer.adapter.parameters()]
    assert all(g is not None for g in adapter_grads) and any(bool(g.abs().sum() > 0) for g in adapter_grads)
    assert quantizer.step.grad is not None


def test_asq_adapter_for_few_channels_is_one_linear() -> None:
    quantizer = ASQActivationQuantizer(
        ASQActivationConfig(bits=2), signed=True, num_channels=3, channel_dim=1
    )
    linears = [m for m in quantizer.adapter.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 1)]
    assert quantizer.q_negative == -2
    with pytest.raises(ValueError, match=r"ASQActivationConfig\(reduction=0\) must be a positive integer"):
        ASQActivationConfig(reduction=0)


def test_post_config_validation() -> None:
    with pytest.raises(ValueError, match=r"POSTWeightConfig\(base=1\.0\) must be greater than 1"):
        POSTWeightConfig(base=1.0)
    with pytest.raises(ValueError, match=r"\(clip_quantile=0\.2\) must lie in \[0\.5, 1\.0\]"):
        POSTWeightConfig(clip_quantile=0.2)


def test_lsq_weight_step_init_and_gradient_scale() -> None:
    weight = torch.randn(4, 2, 3, 3)
    quantizer = LSQWeightQuantizer(LSQWeightConfig(bits=3), weight)
    expected = 2 * weight.abs().mean(dim=(1, 2, 3)) / math.sqrt(3)
    assert torch.allclose(quantizer.step.detach(), expected)
    assert quantizer.grad_scale == pytest.approx(1 / math.sqrt(3 * 18))
    assert LSQWeightQuantizer(LSQWeightConfig(bits=3, grad_scale=False), weight).grad_scale == 1.0


def test_lsq_activation_initialises_once_from_the_first_batch_and_keeps_that_in_state() -> None:
    quantizer = LSQActivationQuantizer(
        LSQActivationConfig(bits=2), signed=False, num_channels=3, channel_dim=1
    )
    first = torch.rand(4, 3, 5, 5) * 3
    quantizer(first)
    step = 2 * first.abs().mean() / math.sqrt(3)
    assert torch.allclose(quantizer.step.detach(), step) and bool(quantizer.initialized)
    quantizer(first * 10)
    assert torch.allclose(quantizer.step.detach(), step)  # not re-initialised
    fresh = LSQActivationQuantizer(LSQActivationConfig(bits=2), signed=False, num_channels=3, channel_dim=1)
    fresh.load_state_dict(quantizer.state_dict())
    fresh(first * 10)
    assert torch.equal(fresh.step, quantizer.step)  # a loaded step is not overwritten by the next batch


# ----------------------------------------------------------------------------- whole models
def _mapping(config: ADQConfig) -> ADQConfigMapping:
    return ADQConfigMapping().set_global(config)


@pytest.mark.parametrize(
    "config",
    [
        LSQ,
        N2UQ,
        POST,
        ASQ_POST,
        ADQConfig(weight=LSQWeightConfig(bits=2), activation=ThresholdActivationConfig(bits=4)),
    ],
    ids=["lsq", "n2uq", "post_lsq", "asq_post", "lsq_w2_thresholds_a4"],
)
@pytest.mark.parametrize("model_type", [TinyResNet, SignedNet])
def test_baselines_convert_to_lookup_tables_that_compute_the_trained_model(config, model_type) -> None:
    torch.manual_seed(0)
    x = images(8)
    prepared = prepare_adq(model_type(), _mapping(config), x)
    before = {k: v.clone() for k, v in prepared.state_dict().items() if isinstance(v, torch.Tensor)}
    train(prepared, x, steps=3, cross_entropy=True)
    moved = [
        k
        for k, v in prepared.state_dict().items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.equal(v, before[k])
    ]
    assert any(k.endswith("weight") for k in moved)
    converted = convert_adq(prepared, backend="reference")
    fresh = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected, got = prepared(fresh), converted(fresh)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    encoder_type = {
        LSQActivationConfig: StepEncoder,
        ASQActivationConfig: AdaptiveStepEncoder,
        ThresholdActivationConfig: ThresholdEncoder,
    }[type(config.activation)]
    assert any(isinstance(m, encoder_type) for m in converted.modules())
    layers = [m for m in converted.modules() if isinstance(m, LUTConv2d)]
    assert layers and all(m.weight_codes.dtype == torch.uint8 for m in layers)
    assert all(int(m.weight_codes.max()) < 2**config.weight.bits for m in layers)
    # the prepared model's size estimate is what the converted model ships
    assert model_size_bits(prepared) == model_size_bits(converted)


def test_signed_lsq_activation_uses_the_signed_range() -> None:
    prepared = prepare_adq(SignedNet(), _mapping(LSQ), images(8))
    assert prepared.conv_b_input_quantizer.q_negative == -4
    assert prepared.conv_a_input_quantizer.q_negative == 0  # behind a ReLU


def test_only_adq_layers_add_commitment_loss() -> None:
    x = images(8)
    mapping = _mapping(LSQ).set_module_name("layer1.conv1", ADQConfig.with_bits(3))
    prepared = prepare_adq(TinyResNet(), mapping, x)
    adq_only = prepared.get_submodule("layer1.conv1")
    expected = adq_only.weight_quantizer.commitment(adq_only.weight)
    assert float(expected.detach()) > 0
    assert torch.equal(commitment_loss(prepared), expected)


@pytest.mark.parametrize("config", [LSQ, N2UQ, POST, ASQ_POST], ids=["lsq", "n2uq", "post", "asq_post"])
def test_baseline_checkpoints_round_trip_through_the_quantization_map(config) -> None:
    x = images(8)
    prepared = train(prepare_adq(TinyResNet(), _mapping(config), x), x, steps=2, cross_entropy=True)
    qmap = quantization_map(prepared)
    assert {e["weight_method"] for e in qmap.values()} == {config.weight.method}
    buffer = io.BytesIO()
    torch.save(prepared.state_dict(), buffer)
    buffer.seek(0)
    again = prepare_adq(TinyResNet(), qconfig_mapping_from_map(qmap), x)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    again.eval()
    with torch.no_grad():
        assert torch.equal(again(x), prepared(x))


def test_a_checkpoint_of_another_method_is_refused_naming_the_module() -> None:
    x = images(8)
    adq = prepare_adq(TinyResNet(), _mapping(ADQConfig.with_bits(3)), x)
    lsq = prepare_adq(TinyResNet(), _mapping(LSQ), x)
    with pytest.raises(
        ValueError,
        match=r"^layer1\.conv1\.weight_quantizer: the state_dict was saved with "
        r"\{'method': 'adq'",
    ):
        lsq.load_state_dict(adq.state_dict(), strict=False)


def test_weight_configs_validate_their_bits() -> None:
    for config_type in (UniformWeightConfig, LSQWeightConfig, LSQActivationConfig, POSTWeightConfig):
        with pytest.raises(ValueError, match=rf"{config_type.__name__}\(bits=1\) is not supported"):
            config_type(bits=1)
    with pytest.raises(ValueError, match=r"LSQActivationConfig\(signed='yes'\) must be None, True or False"):
        LSQActivationConfig(signed="yes")  # type: ignore[arg-type]


def test_mixing_methods_per_layer_through_the_mapping() -> None:
    mapping = _mapping(ADQConfig.with_bits(3)).set_module_name(
        "layer1", ADQConfig(weight=UniformWeightConfig(bits=2), activation=LSQActivationConfig(bits=2))
    )
    prepared = prepare_adq(TinyResNet(), mapping, images(8))
    methods = {
        name: (e["weight_method"], e["activation_method"]) for name, e in quantization_map(prepared).items()
    }
    assert methods["layer1.conv1"] == ("n2uq", "lsq")
    assert methods["layer2.conv1"] == ("adq", "n2uq")
