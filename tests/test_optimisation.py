"""Quantizers under ordinary optimizers: valid states, data-driven starts, param_groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import adq_fx
from adq_fx import (
    ADQConfig,
    ADQConfigMapping,
    ASQActivationConfig,
    CodebookWeightConfig,
    LSQWeightConfig,
    POSTWeightConfig,
    ThresholdActivationConfig,
    param_groups,
    prepare_adq,
)
from adq_fx import functional as F_adq
from adq_fx.functional import MIN_SCALE, positive
from adq_fx.optim import RECIPES
from adq_fx.quantizers import ThresholdActivationQuantizer
from tests.models import TinyResNet, images


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32))
def test_positive_is_exact_for_positive_values_and_the_magnitude_otherwise(value: float) -> None:
    v = torch.tensor(value, requires_grad=True)
    out = positive(v)
    assert float(out.detach()) == (abs(value) if abs(value) >= MIN_SCALE else pytest.approx(MIN_SCALE))
    out.backward()
    assert float(v.grad) == (0.0 if abs(value) < MIN_SCALE else (1.0 if value > 0 else -1.0))


def _threshold_quantizers(model: nn.Module) -> dict[str, ThresholdActivationQuantizer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, ThresholdActivationQuantizer)}


def _distinct_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    counts: dict[str, int] = {}

    def record(name: str):
        return lambda _m, _i, out: counts.__setitem__(name, out.unique().numel())

    hooks = [q.register_forward_hook(record(name)) for name, q in _threshold_quantizers(model).items()]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return counts


def test_plain_sgd_over_all_parameters_leaves_every_threshold_quantizer_working() -> None:
    """The issue's case: random-init MobileNetV2, one SGD over model.parameters(), three steps."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    prepared = prepare_adq(torchvision.models.mobilenet_v2(num_classes=10), None, x)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        loss = F.cross_entropy(prepared(x), y) + adq_fx.commitment_loss(prepared)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    quantizers = _threshold_quantizers(prepared)
    assert len(quantizers) > 40
    for name, q in quantizers.items():
        beta1, beta2 = q.scales()
        assert float(beta1) > 0 and float(beta2) > 0, name
        assert bool((q.thresholds().diff() > 0).all()), name
        # From the data-driven start the raw parameters do not blow up (from N2UQ's fixed start the
        # same three steps take beta1 to -1740 and an interval to -103). A raw scale may cross zero
        # (on an AMX Xeon one beta1 ends at -0.02): the forward reads it as |beta| floored.
        assert abs(float(q.beta1)) < 10 and abs(float(q.beta2)) < 100, name
        assert float(q.intervals.min()) > 0 and abs(float(q.start)) < 1.0, name
    assert min(_distinct_outputs(prepared.train(), x).values()) > 1


def test_a_scale_pushed_below_zero_still_gives_a_valid_quantizer_and_a_gradient_back() -> None:
    q = ThresholdActivationQuantizer(
        ThresholdActivationConfig(bits=3, init="uniform"), signed=False, num_channels=1, channel_dim=1
    )
    with torch.no_grad():
        q.beta1.fill_(-25.0)
        q.beta2.fill_(-3.0)
        q.intervals.copy_(torch.tensor([0.5, -103.0, 0.2, 0.3, 0.1, 0.4, 0.3]))
    x = torch.rand(4, 1, 8, 8)
    out = q(x)
    assert bool(torch.isfinite(out).all()) and bool((out >= 0).all()) and out.unique().numel() > 1
    assert bool((q.thresholds().diff() > 0).all())
    mirrored = ThresholdActivationQuantizer(q.config, signed=False, num_channels=1, channel_dim=1)
    mirrored.load_state_dict(q.state_dict())
    with torch.no_grad():
        mirrored.beta1.fill_(25.0)
        mirrored.beta2.fill_(3.0)
    assert torch.equal(out, mirrored(x))  # a scale driven through zero reads as its magnitude
    out.sum().backward()
    assert float(q.beta1.grad) != 0.0 and float(q.beta2.grad) != 0.0


@pytest.mark.parametrize("init", ["auto", "first_batch", "uniform"])
def test_activations_far_from_one_keep_their_signal_from_the_first_batch(init: str) -> None:
    """AlexNet has no BatchNorm: its classifier inputs are far below N2UQ's fixed [0, 2] start."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=10).eval()
    x = torch.rand(8, 3, 64, 64)
    activation = ThresholdActivationConfig(bits=3, init=init)
    config = ADQConfig(weight=CodebookWeightConfig(bits=3), activation=activation)
    prepared = prepare_adq(model, ADQConfigMapping().set_global(config), x).eval()
    counts = _distinct_outputs(prepared, x)
    out = prepared(x).detach()
    if init == "uniform":  # the fixed start loses the classifier's signal: the reason for the default
        assert min(counts.values()) == 1
        return
    assert min(counts.values()) > 1, counts
    assert len(torch.unique(out, dim=0)) == len(x)  # every input gets its own output
    if init == "auto":  # the default, and here the data moved some starts
        assert ThresholdActivationConfig().init == "auto"
        starts = [q.started_from for q in prepared.modules() if isinstance(q, ThresholdActivationQuantizer)]
        assert "data" in starts, starts


def test_param_groups_give_each_kind_its_recipe_and_every_parameter_one_group() -> None:
    x = images(4)
    mapping = (
        ADQConfigMapping()
        .set_global(ADQConfig(weight=CodebookWeightConfig(bits=3)))
        .set_module_name(
            "layer1.conv1", ADQConfig(weight=LSQWeightConfig(bits=3), activation=ASQActivationConfig(bits=3))
        )
        .set_module_name("layer1.conv2", ADQConfig(weight=POSTWeightConfig(bits=3)))
    )
    prepared = prepare_adq(TinyResNet(), mapping, x)
    groups = {
        g["name"]: g for g in param_groups(prepared, lr=0.1, weight_decay=5e-4, lr_scales={"thresholds": 0.5})
    }
    assert set(groups) == {"weights", "no_decay", "thresholds", "steps", "adapters", "clips"}
    listed = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in prepared.parameters())  # each exactly once
    assert groups["thresholds"]["lr"] == pytest.approx(0.05) and groups["thresholds"]["weight_decay"] == 0.0
    assert groups["weights"]["weight_decay"] == 5e-4 and groups["adapters"]["weight_decay"] == 5e-4
    assert groups["steps"]["weight_decay"] == 0.0 and groups["clips"]["weight_decay"] == 0.0
    q = prepared.layer1.conv1_input_quantizer
    assert any(p is q.step for p in groups["steps"]["params"])
    assert any(p is prepared.layer1.conv2.weight_quantizer.clip for p in groups["clips"]["params"])
    torch.optim.SGD(list(groups.values()), lr=0.1)  # a torch optimizer takes them as they are


def test_param_groups_refuse_an_unknown_kind_or_a_bad_scale() -> None:
    prepared = prepare_adq(TinyResNet(), None, images(2))
    with pytest.raises(ValueError, match=r"unknown kind; use one of .*'thresholds'"):
        param_groups(prepared, lr=0.1, weight_decay=0.0, lr_scales={"threshold": 1.0})
    with pytest.raises(ValueError, match=r"'steps': 0.0\}\) must be positive"):
        param_groups(prepared, lr=0.1, weight_decay=0.0, lr_scales={"steps": 0.0})
    assert set(RECIPES) >= {"thresholds", "steps", "adapters", "clips"}


@settings(max_examples=25, deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e3), st.floats(min_value=0.1, max_value=10.0))
def test_relative_gradient_bound_caps_large_gradients_and_keeps_values(gain: float, bound: float) -> None:
    values = [torch.tensor(0.5, requires_grad=True), torch.tensor([0.2, 0.3], requires_grad=True)]
    out = F_adq.bound_relative_gradient(bound, *values)
    assert all(torch.equal(o, v) for o, v in zip(out, values, strict=True))
    (out[0] * gain + (out[1] * gain).sum()).backward()
    grad = torch.cat([values[0].grad.view(1), values[1].grad])
    norm = torch.cat([values[0].detach().view(1), values[1].detach()]).norm()
    raw = gain * 3**0.5
    expected = min(raw, bound * float(norm))
    assert float(grad.norm()) == pytest.approx(expected, rel=1e-5)  # capped, direction kept
    assert torch.allclose(grad / grad.norm(), torch.ones(3) / 3**0.5)
