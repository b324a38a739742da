"""Optimizer parameter groups: one recipe (lr scale, weight decay) per kind of parameter.

Quantizer parameters are not weights: a threshold or a step pulled toward zero
by weight decay clips the signal, and their gradients are sums over a whole
activation. Each quantizer class names the kind of each of its parameters
(``parameter_kinds``); :data:`RECIPES` says how each kind trains, and
:func:`param_groups` turns a model into groups any ``torch.optim`` optimizer takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True, kw_only=True)
class ParameterRecipe:
    """How one kind of parameter trains: ``lr_scale`` times the base lr; ``decay`` says whether
    the caller's weight decay applies."""

    lr_scale: float = 1.0
    decay: bool = False

    def __post_init__(self) -> None:
        if not self.lr_scale > 0:
            raise ValueError(f"ParameterRecipe(lr_scale={self.lr_scale!r}) must be positive.")


RECIPES: Mapping[str, ParameterRecipe] = {
    "weights": ParameterRecipe(decay=True),  # conv / linear weights (dim > 1)
    "no_decay": ParameterRecipe(),  # biases, norm affines: decay would only shrink them
    "thresholds": ParameterRecipe(lr_scale=0.1),  # N2UQ: quantizer parameters at lr / 10
    "steps": ParameterRecipe(),  # LSQ / ASQ steps (gradient already scaled as LSQ's)
    "adapters": ParameterRecipe(decay=True),  # ASQ's adapter: a small network, trained as one
    "clips": ParameterRecipe(),  # POST's per-channel clip
}


def parameter_kind(module: nn.Module, local_name: str) -> str | None:
    """The kind a quantizer module declares for its parameter ``local_name`` (longest prefix wins)."""
    kinds: Mapping[str, str] = getattr(type(module), "parameter_kinds", {})
    matches = [prefix for prefix in kinds if local_name == prefix or local_name.startswith(prefix + ".")]
    return kinds[max(matches, key=len)] if matches else None


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    lr_scales: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups of ``model`` for ``torch.optim``: one per kind present, named by ``"name"``.

    For example ``torch.optim.SGD(param_groups(prepared, lr=0.01, weight_decay=5e-4), lr=0.01)``.

    ``lr_scales`` overrides a kind's lr scale, e.g. ``{"thresholds": 1.0}``. Every
    trainable parameter lands in exactly one group; frozen ones are left out.
    """
    scales = {kind: recipe.lr_scale for kind, recipe in RECIPES.items()}
    for kind, scale in (lr_scales or {}).items():
        if kind not in RECIPES:
            raise ValueError(
                f"param_groups(lr_scales={{{kind!r}: ...}}): unknown kind; use one of {sorted(RECIPES)}."
            )
        if not scale > 0:
            raise ValueError(f"param_groups(lr_scales={{{kind!r}: {scale!r}}}) must be positive.")
        scales[kind] = scale
    kind_of: dict[int, str] = {}
    for module in model.modules():
        for local_name, parameter in module.named_parameters(recurse=True):
            declared = parameter_kind(module, local_name)
            if declared is not None and id(parameter) not in kind_of:
                kind_of[id(parameter)] = declared
    grouped: dict[str, list[nn.Parameter]] = {kind: [] for kind in RECIPES}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        kind = kind_of.get(id(parameter), "weights" if parameter.dim() > 1 else "no_decay")
        grouped[kind].append(parameter)
    return [
        {
            "name": kind,
            "params": params,
            "lr": lr * scales[kind],
            "weight_decay": weight_decay if RECIPES[kind].decay else 0.0,
        }
        for kind, params in grouped.items()
        if params
    ]


__all__ = ["RECIPES", "ParameterRecipe", "param_groups", "parameter_kind"]
