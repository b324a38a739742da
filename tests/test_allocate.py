"""Mixed precision: eq. (8) sensitivity and eq. (9) + Alg. 2 bit allocation, against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from adq_fx.allocate import (
    allocate_bits,
    allocate_bits_min_loss,
    continuous_bits,
    layer_noise_weights,
    layer_sensitivity,
    reachable_totals,
)

sensitivity = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)


def literal_alg2(values: list[float], total: int, options: list[int]) -> list[int]:
    """Alg. 2 as printed, for cases where it is defined (every b' inside the option range)."""
    wanted = continuous_bits(values, float(total))
    bits = [max(b for b in options if b <= w + 1e-9) for w in wanted]
    priority = [w - b for w, b in zip(wanted, bits, strict=True)]
    order = sorted(range(len(values)), key=lambda i: (-priority[i], -values[i], i))
    for layer in order[: round(total - sum(bits))]:
        bits[layer] = min(b for b in options if b > bits[layer])
    return bits


@settings(max_examples=150, deadline=None)
@given(st.lists(sensitivity, min_size=1, max_size=7), st.sampled_from([2.0, 2.5, 2.8, 3.0, 3.3, 4.0]))
def test_meets_the_budget_exactly_and_keeps_sensitive_layers_ahead(values, target) -> None:
    names = [f"l{i}" for i in range(len(values))]
    total = math.floor(len(values) * target + 0.5)
    bits = allocate_bits(dict(zip(names, values, strict=True)), target)
    assert sum(bits.values()) == total
    assert set(bits.values()) <= {2, 3, 4}
    for a, b in itertools.permutations(range(len(values)), 2):
        if values[a] > values[b]:
            assert bits[names[a]] >= bits[names[b]], (values, bits)


# Alg. 2 is defined where every continuous b'_l lies in [2, 4): draw log(1 + σ_l) near the target, so
# most draws land there (eq. 9 makes b'_l proportional to log(1 + σ_l)) instead of filtering most out.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.lists(st.floats(min_value=2.2, max_value=3.8), min_size=2, max_size=7, unique=True),
    st.sampled_from([2.5, 2.8, 3.0, 3.2]),
)
def test_equals_literal_alg2_where_alg2_is_defined(log_sensitivities, target) -> None:
    values = [math.expm1(v) for v in log_sensitivities]
    total = math.floor(len(values) * target + 0.5)
    wanted = continuous_bits(values, float(total))
    assume(all(2.0 <= w < 4.0 for w in wanted))
    assume(len({round(v, 9) for v in values}) == len(values))  # no ties in the priorities
    names = [f"l{i}" for i in range(len(values))]
    bits = allocate_bits(dict(zip(names, values, strict=True)), target)
    assert list(bits.values()) == literal_alg2(values, total, [2, 3, 4])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(sensitivity, min_size=1, max_size=5),
    st.floats(min_value=2.0, max_value=8.0),
    st.sampled_from([(2, 3, 4), (2, 4), (2, 4, 8), (3, 8)]),
)
def test_brute_force_agrees_on_feasibility_and_the_result_is_feasible(values, target, options) -> None:
    names = [f"l{i}" for i in range(len(values))]
    total = math.floor(len(values) * target + 0.5)
    feasible = [c for c in itertools.product(options, repeat=len(values)) if sum(c) == total]
    if not feasible or not options[0] <= target <= options[-1]:
        with pytest.raises(ValueError, match="nearest reachable averages"):
            allocate_bits(dict(zip(names, values, strict=True)), target, options)
        return
    bits = allocate_bits(dict(zip(names, values, strict=True)), target, options)
    assert tuple(bits.values()) in feasible


def test_zero_sensitivities_share_bits_equally() -> None:
    assert allocate_bits({"a": 0.0, "b": 0.0, "c": 0.0}, 3.0) == {"a": 3, "b": 3, "c": 3}


def test_ties_go_to_the_earlier_layer() -> None:
    bits = allocate_bits({"a": 1.0, "b": 1.0, "c": 1.0}, 3 + 1 / 3)
    assert bits == {"a": 4, "b": 3, "c": 3}


def test_paper_average_over_sixteen_layers_is_45_bits() -> None:
    values = {f"layer{i}": 10.0 ** (i / 4 - 1) for i in range(16)}
    bits = allocate_bits(values, 2.81)
    assert sum(bits.values()) == 45  # 2.8125, Table 4.3's 45/16


@pytest.mark.parametrize(
    ("values", "target", "options", "message"),
    [
        ({"a": 1.0}, 1.5, (2, 3, 4), "nearest reachable averages are 2"),
        ({"a": 1.0, "b": 2.0}, 4.5, (2, 3, 4), "nearest reachable averages are 4"),
        ({"a": 1.0, "b": 2.0, "c": 3.0}, 3.0, (2, 4), "nearest reachable averages are 2.667 and 3.333"),
        ({"a": -1.0}, 3.0, (2, 3, 4), "'a'"),
        ({"a": float("nan")}, 3.0, (2, 3, 4), "'a'"),
        ({}, 3.0, (2, 3, 4), "no sensitivities"),
    ],
)
def test_impossible_requests_raise_with_the_fix(values, target, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        allocate_bits(values, target, options)


def test_reachable_totals() -> None:
    assert reachable_totals(2, [2, 4]) == {4, 6, 8}


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_layer_sensitivity_is_the_summed_squared_gradient_norm() -> None:
    torch.manual_seed(0)
    model = _Net().train()
    batches = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
    running_mean = model.bn.running_mean.clone()
    scores = layer_sensitivity(model, batches, nn.functional.cross_entropy)

    model.eval()
    expected = dict.fromkeys(("conv", "fc"), 0.0)
    for x, y in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        expected["conv"] += float(model.conv.weight.grad.pow(2).sum())
        expected["fc"] += float(model.fc.weight.grad.pow(2).sum())
    assert scores == pytest.approx(expected, rel=1e-5)
    assert torch.equal(model.bn.running_mean, running_mean)  # eval mode: nothing updated


def test_layer_sensitivity_restores_modes_and_rejects_empty_batches() -> None:
    model = _Net().train()
    with pytest.raises(ValueError, match="batches was empty"):
        layer_sensitivity(model, [], nn.functional.cross_entropy)
    assert model.training and model.bn.training


# ------------------------------------------------------------------ the min-loss rule
@settings(max_examples=80, deadline=None)
@given(
    st.lists(sensitivity, min_size=1, max_size=5),
    st.floats(min_value=2.0, max_value=8.0),
    st.sampled_from([(2, 3, 4), (2, 4), (2, 4, 8), (3, 8)]),
)
def test_min_loss_allocation_is_the_brute_force_optimum(values, target, options) -> None:
    names = [f"l{i}" for i in range(len(values))]
    total = math.floor(len(values) * target + 0.5)
    feasible = [c for c in itertools.product(options, repeat=len(values)) if sum(c) == total]
    request = dict(zip(names, values, strict=True))
    if not feasible or not options[0] <= target <= options[-1]:
        with pytest.raises(ValueError, match=r"allocate_bits_min_loss: .*nearest reachable averages"):
            allocate_bits_min_loss(request, target, options)
        return
    bits = tuple(allocate_bits_min_loss(request, target, options).values())
    assert bits in feasible

    def loss(c: tuple[int, ...]) -> float:
        return sum(g * 4.0 ** (-b) for g, b in zip(values, c, strict=True))

    assert loss(bits) <= min(loss(c) for c in feasible) * (1 + 1e-12) + 1e-300


def test_min_loss_gives_the_bits_to_the_layer_whose_noise_costs_most() -> None:
    # eq. (9) ranks by the sensitivity alone; the min-loss rule by sensitivity x weight power
    assert allocate_bits_min_loss({"wide": 1.0, "narrow": 16.0, "flat": 0.0}, 3.0) == {
        "wide": 3,
        "narrow": 4,
        "flat": 2,
    }
    assert allocate_bits_min_loss({"a": 1.0, "b": 1.0}, 3.5) == {"a": 4, "b": 3}  # a tie: earlier layer


@pytest.mark.parametrize(
    ("values", "message"),
    [({}, "no sensitivities"), ({"a": -1.0}, "'a'"), ({"a": float("inf")}, "'a'")],
)
def test_min_loss_rejects_bad_weights_naming_itself(values, message) -> None:
    with pytest.raises(ValueError, match=rf"allocate_bits_min_loss: .*{message}"):
        allocate_bits_min_loss(values, 3.0)


def test_layer_noise_weights_are_sensitivity_times_weight_power() -> None:
    net = _Net()
    weights = layer_noise_weights(net, {"conv": 2.0, "fc": 0.5})
    assert weights["conv"] == pytest.approx(2.0 * net.conv.weight.detach().pow(2).mean().item())
    assert weights["fc"] == pytest.approx(0.5 * net.fc.weight.detach().pow(2).mean().item())
    with pytest.raises(ValueError, match=r"'bn\.missing' is not a module with a weight in _Net"):
        layer_noise_weights(net, {"bn.missing": 1.0})
