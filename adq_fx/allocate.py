"""Mixed precision: layer sensitivity (eq. 8) and bit allocation (eq. 9 + Alg. 2).

``allocate_bits`` is a pure function of plain numbers, so it is tested against
brute force. Where the paper's Alg. 2 is undefined we extend it as follows:
- b'_l below the smallest option is clamped up, above the largest clamped down;
- the remaining budget is spent (or, after clamping up, recovered) one option
  step at a time, always on the layer whose continuous bits are furthest above
  (or below) its current bits; with a gap-1 option set and no clamping this is
  exactly Alg. 2 (each layer upgraded at most once, by fractional part);
- ties go to the more sensitive layer, then to the earlier one;
- all-zero sensitivities give every layer the same continuous share;
- if the greedy steps cannot land on the budget (option gaps larger than 1),
  the assignment nearest to the continuous bits (least squares) that meets it
  is used instead.
The total budget is round(L · target_average) bits; when no assignment of the
options can sum to it, the error names the nearest reachable averages.

``allocate_bits_min_loss`` is the alternative rule (not the paper's): the
assignment that minimises a second-order estimate of the loss the weight noise
adds, Σ_l σ_l · mean(W_l²) · 4^(-b_l) (``layer_noise_weights``), exactly, by
dynamic programming over the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn


def continuous_bits(sensitivities: Sequence[float], total_bits: float) -> list[float]:
    """Eq. (9): b'_l = B_total · log(1 + σ_l) / Σ_k log(1 + σ_k)."""
    logs = [math.log1p(s) for s in sensitivities]
    norm = sum(logs)
    if norm == 0.0:
        return [total_bits / len(logs)] * len(logs)
    return [total_bits * v / norm for v in logs]


def reachable_totals(num_layers: int, options: Sequence[int]) -> set[int]:
    totals = {0}
    for _ in range(num_layers):
        totals = {t + b for t in totals for b in options}
    return totals


def allocate_bits(
    sensitivities: Mapping[str, float], target_average: float, bit_options: Sequence[int] = (2, 3, 4)
) -> dict[str, int]:
    """Per-layer bit-widths whose sum is round(L · target_average), most sensitive layers first."""
    names, values, options, total = _budget(sensitivities, target_average, bit_options, "allocate_bits")
    wanted = continuous_bits(values, float(total))
    bits = [_clamp_floor(w, options) for w in wanted]
    rank = sorted(range(len(names)), key=lambda i: (-values[i], i))  # tie-break order
    order_of = {layer: position for position, layer in enumerate(rank)}
    remaining = total - sum(bits)
    while remaining != 0:
        step = _best_step(bits, wanted, options, order_of, remaining)
        if step is None:
            bits = _nearest_assignment(wanted, options, total)
            break
        layer, new_bits = step
        remaining -= new_bits - bits[layer]
        bits[layer] = new_bits
    return dict(zip(names, bits, strict=True))


def _best_step(
    bits: list[int], wanted: list[float], options: list[int], order_of: dict[int, int], remaining: int
) -> tuple[int, int] | None:
    """The next Alg. 2 move: upgrade the largest (b' - b), or downgrade the smallest, if it fits."""
    candidates = []
    for layer, current in enumerate(bits):
        index = options.index(current)
        if remaining > 0 and index + 1 < len(options) and options[index + 1] - current <= remaining:
            candidates.append((-(wanted[layer] - current), order_of[layer], layer, options[index + 1]))
        elif remaining < 0 and index > 0 and current - options[index - 1] <= -remaining:
            candidates.append((wanted[layer] - current, -order_of[layer], layer, options[index - 1]))
    if not candidates:
        return None
    _, _, layer, new_bits = min(candidates)
    return layer, new_bits


def _clamp_floor(value: float, options: list[int]) -> int:
    below = [b for b in options if b <= value + 1e-9]
    return below[-1] if below else options[0]


def _nearest_assignment(wanted: list[float], options: list[int], total: int) -> list[int]:
    """Least-squares closest assignment meeting the total exactly."""
    return _cheapest_assignment([_squared_distance_to(w) for w in wanted], options, total)


def _squared_distance_to(wanted: float) -> Callable[[int], float]:
    return lambda bits: (bits - wanted) ** 2


def _noise_loss(weight: float) -> Callable[[int], float]:
    return lambda bits: weight * 4.0 ** (-bits)


def _cheapest_assignment(costs: list[Callable[[int], float]], options: list[int], total: int) -> list[int]:
    """The bits per layer, from ``options``, summing to ``total`` with the least Σ costs[l](b_l).

    Dynamic programming over the running total; on equal cost the assignment found
    first is kept (the earlier layers take ``options`` in the order given). ``total``
    must be reachable.
    """
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
    for cost_of in costs:
        nxt: dict[int, tuple[float, list[int]]] = {}
        for subtotal, (cost, chosen) in best.items():
            for b in options:
                key, c = subtotal + b, cost + cost_of(b)
                if key <= total and (key not in nxt or c < nxt[key][0]):
                    nxt[key] = (c, [*chosen, b])
        best = nxt
    return best[total][1]


def allocate_bits_min_loss(
    noise_weights: Mapping[str, float], target_average: float, bit_options: Sequence[int] = (2, 3, 4)
) -> dict[str, int]:
    """Per-layer bits whose sum is round(L · target_average), minimising Σ_l g_l · 4^(-b_l).

    ``g_l`` is how much loss one unit of relative quantization noise in layer l
    costs (``layer_noise_weights``: σ_l · mean(W_l²)); each extra bit quarters a
    layer's noise power. The paper's eq. (9) instead spreads bits in proportion to
    log(1 + σ_l), which grows with a layer's parameter count (σ is a sum over
    them), so at a per-layer average it gives the widest layers the most bits.
    This rule spends the same per-layer budget where the estimate says the loss
    is; it is exact (dynamic programming), for any option set.
    """
    names, values, options, total = _budget(
        noise_weights, target_average, bit_options, "allocate_bits_min_loss"
    )
    costs = [_noise_loss(g) for g in values]
    # options from the top: on equal loss the earlier layer keeps more bits, as in allocate_bits
    chosen = _cheapest_assignment(costs, options[::-1], total)
    return dict(zip(names, chosen, strict=True))


def layer_noise_weights(model: nn.Module, sensitivities: Mapping[str, float]) -> dict[str, float]:
    """``σ_l · mean(W_l²)`` per layer: eq. (8)'s sensitivity times the layer's weight power.

    With per-channel scales the quantization error of a weight is proportional to
    its channel's RMS, so a layer's noise power at b bits is about mean(W²) · 4^(-b),
    and the loss it adds to second order is the Fisher trace σ_l times that
    (HAWQ-v2's trace-times-perturbation estimate, with the empirical Fisher).
    """
    modules = dict(model.named_modules())
    weights: dict[str, float] = {}
    for name, sigma in sensitivities.items():
        weight = getattr(modules.get(name), "weight", None)
        if not isinstance(weight, Tensor):
            raise ValueError(
                f"layer_noise_weights: {name!r} is not a module with a weight in {type(model).__name__}; "
                "pass the sensitivities layer_sensitivity measured on this model."
            )
        weights[name] = float(sigma) * float(weight.detach().float().pow(2).mean())
    return weights


def _budget(
    per_layer: Mapping[str, float], target: float, bit_options: Sequence[int], caller: str
) -> tuple[list[str], list[float], list[int], int]:
    """(names, values, sorted options, total bits) of a valid request; a clear error otherwise."""
    names = list(per_layer)
    values = [float(per_layer[n]) for n in names]
    options = sorted(set(bit_options))
    _check_inputs(names, values, options, target, caller)
    total = math.floor(len(names) * target + 0.5)
    reachable = reachable_totals(len(names), options) if len(names) <= 64 else None
    if not options[0] <= target <= options[-1] or (reachable is not None and total not in reachable):
        raise ValueError(_unreachable_message(len(names), target, total, options, reachable, caller))
    return names, values, options, total


def _check_inputs(
    names: list[str], values: list[float], options: list[int], target: float, caller: str
) -> None:
    if not names:
        raise ValueError(f"{caller}: no sensitivities given; pass {{layer name: sensitivity}}.")
    for name, value in zip(names, values, strict=True):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{caller}: sensitivity of {name!r} is {value}; it must be finite, >= 0.")
    if not options or any(not isinstance(b, int) or b < 1 for b in options):
        raise ValueError(f"{caller}: bit_options={options} must be positive integers.")
    if not math.isfinite(target):
        raise ValueError(f"{caller}: target_average={target} must be finite.")


def _unreachable_message(
    count: int,
    target: float,
    total: int,
    options: list[int],
    reachable: set[int] | None,
    caller: str,
) -> str:
    if reachable is None:
        reachable = {count * options[0], count * options[-1]}
    below = max((t for t in reachable if t <= total), default=None)
    above = min((t for t in reachable if t >= total), default=None)
    nearest = list(dict.fromkeys(f"{t / count:.4g}" for t in (below, above) if t is not None))
    return (
        f"{caller}: an average of {target} bits over {count} layers ({total} bits in all) "
        f"cannot be made from the options {options}; the nearest reachable averages are "
        f"{' and '.join(nearest)}."
    )


def layer_sensitivity(
    model: nn.Module,
    batches: Iterable[tuple[Any, Any]],
    loss_fn: Callable[[Any, Any], Tensor],
    *,
    layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear),
) -> dict[str, float]:
    """Eq. (8): Σ over batches of ‖∇_W L‖² for every Conv2d/Linear weight, by module name.

    Run it on the float pre-trained model, before prepare: it ranks layers by
    how much the task loss reacts to their weights, which is what the bits
    are for, and it then needs no quantizer in the graph. It evaluates the
    model in eval mode (BatchNorm uses its running statistics, nothing is
    updated) and leaves parameters' .grad untouched.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, layer_types)}
    if not layers:
        raise ValueError(f"layer_sensitivity: {type(model).__name__} has no Conv2d/Linear layer.")
    weights = [cast(Tensor, m.weight) for m in layers.values()]
    totals = dict.fromkeys(layers, 0.0)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    seen = 0
    try:
        for inputs, targets in batches:
            outputs = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
            grads = torch.autograd.grad(loss_fn(outputs, targets), weights, allow_unused=True)
            for name, grad in zip(layers, grads, strict=True):
                if grad is not None:
                    totals[name] += float(grad.detach().pow(2).sum())
            seen += 1
    finally:
        for module, mode in modes.items():
            module.training = mode
    if seen == 0:
        raise ValueError("layer_sensitivity: batches was empty; pass at least one (inputs, targets) pair.")
    return totals
