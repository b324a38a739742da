"""One entry per quantizer: everything else about it is derived from here.

A quantizer is a config dataclass (with a ``method`` name), a module built from
it and, for activations, the encoder that replaces the module in a converted
model. Registering them is all that the passes, ``ADQConfig``, the saved
``quantization_map``, ``adq-fx train``'s choices and ``param_groups`` need::

    @register_quantizer(MyWeightConfig)
    class MyWeightQuantizer(WeightQuantizer): ...

    @register_encoder(MyActivationQuantizer)      # activations only
    class MyEncoder(nn.Module): ...

The name is the config's ``method``: unique per role (weight or activation),
used by the CLI (``--weight-quantizer NAME``), the quantization map and the
checkpoint layout check. This module imports nothing of adq_fx, so any module
can register without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Role = Literal["weight", "activation"]
T = TypeVar("T", bound=type)

# Names of releases before the registry (distinct across roles), read from old checkpoints and maps.
LEGACY_NAMES: dict[str, str] = {"adq_codebook": "adq", "n2uq_uniform": "n2uq", "n2uq_thresholds": "n2uq"}


@dataclass(kw_only=True)
class QuantizerEntry:
    """What adq_fx knows about one quantizer."""

    name: str
    role: Role
    config: type
    quantizer: type
    encoder: type[Any] | None = None  # activations: built by ``encoder.from_quantizer(quantizer)``


_ENTRIES: dict[Role, dict[str, QuantizerEntry]] = {"weight": {}, "activation": {}}


def _role_of(quantizer: type) -> Role:
    # Lazy: the base classes import torch modules that in turn may register quantizers.
    from .quantizers.base import ActivationQuantizer, WeightQuantizer

    if issubclass(quantizer, WeightQuantizer):
        return "weight"
    if issubclass(quantizer, ActivationQuantizer):
        return "activation"
    raise TypeError(
        f"register_quantizer: {quantizer.__name__} must subclass adq_fx.quantizers."
        "WeightQuantizer or ActivationQuantizer."
    )


def register_quantizer(config: type) -> Callable[[T], T]:
    """Class decorator: ``config`` (a dataclass with a ``method`` name) builds the decorated module."""
    name = getattr(config, "method", None)
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"register_quantizer: {config.__name__} needs a class attribute "
            "method: ClassVar[str] = '<name>', the quantizer's one name."
        )

    def register(quantizer: T) -> T:
        role = _role_of(quantizer)
        entries = _ENTRIES[role]
        known = entries.get(name)
        if known is not None and (
            known.config is not config or known.quantizer.__qualname__ != quantizer.__qualname__
        ):
            raise ValueError(
                f"register_quantizer: the {role} quantizer name {name!r} is taken by "
                f"{known.quantizer.__name__}; give {config.__name__}.method another name."
            )
        entries[name] = QuantizerEntry(
            name=name,
            role=role,
            config=config,
            quantizer=quantizer,
            encoder=None if known is None else known.encoder,
        )
        return quantizer

    return register


def register_encoder(quantizer: type) -> Callable[[T], T]:
    """Class decorator: the decorated module (with ``from_quantizer``) replaces ``quantizer`` at convert."""

    def register(encoder: T) -> T:
        if not callable(getattr(encoder, "from_quantizer", None)):
            raise TypeError(
                f"register_encoder: {encoder.__name__} needs a classmethod "
                "from_quantizer(quantizer) that builds it from the trained quantizer."
            )
        entry_for_quantizer(quantizer).encoder = encoder
        return encoder

    return register


def entries(role: Role) -> dict[str, QuantizerEntry]:
    """The registered quantizers of one role, by name, sorted (registration order is import order)."""
    return dict(sorted(_ENTRIES[role].items()))


def names(role: Role) -> tuple[str, ...]:
    return tuple(entries(role))


def entry_named(role: Role, name: str) -> QuantizerEntry:
    """The entry of ``name`` (or of a pre-registry name) for ``role``; a clear error otherwise."""
    name = canonical_name(name)
    try:
        return _ENTRIES[role][name]
    except KeyError:
        raise ValueError(
            f"no {role} quantizer is named {name!r}; registered: {', '.join(names(role))}."
        ) from None


def entry_for_config(config: Any) -> QuantizerEntry:
    for role_entries in _ENTRIES.values():
        for entry in role_entries.values():
            if type(config) is entry.config:
                return entry
    raise TypeError(
        f"{type(config).__name__} is not a registered quantizer config; registered: "
        f"{', '.join(e.config.__name__ for r in _ENTRIES.values() for e in r.values())}."
    )


def entry_for_quantizer(quantizer: type) -> QuantizerEntry:
    for role_entries in _ENTRIES.values():
        for entry in role_entries.values():
            if entry.quantizer is quantizer:
                return entry
    raise TypeError(
        f"{quantizer.__name__} is not a registered quantizer: decorate it with "
        "adq_fx.registry.register_quantizer(ItsConfig)."
    )


def config_types(role: Role) -> tuple[type, ...]:
    return tuple(e.config for e in entries(role).values())


def encoder_types() -> tuple[type, ...]:
    """Every registered encoder class: the activation halves of converted models."""
    return tuple(e.encoder for e in _ENTRIES["activation"].values() if e.encoder is not None)


def canonical_name(name: str) -> str:
    """``name`` with a pre-registry name mapped to today's (for old checkpoints)."""
    return LEGACY_NAMES.get(name, name)
