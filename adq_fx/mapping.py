"""Which layer gets which ADQConfig: torch.ao QConfigMapping's precedence, on our configs.

Precedence, lowest to highest: global < object_type < the first/last rule <
module_name_regex < module_name. Setting the same key twice keeps the later
value; among regexes the first registered that matches wins; a module name
also covers the modules under it (nearest configured ancestor wins). A config
of ``None`` keeps the layer float. Every entry must match at least one
quantizable layer at prepare time, or prepare raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from torch import nn

from .config import ADQConfig
from .registry import entry_named

_MISSING = object()


@dataclass(frozen=True)
class LayerSite:
    """What the mapping needs to know about one quantizable call site."""

    name: str
    module_type: type[nn.Module]
    is_first_conv: bool
    is_last_linear: bool


class ADQConfigMapping:
    """Per-layer configuration with torch.ao's method names and precedence.

    ``keep_first_and_last_float`` (default True, the paper's setting) keeps the
    first Conv2d and the last Linear of the traced graph in float unless a
    module name or regex entry says otherwise.
    """

    def __init__(self, *, keep_first_and_last_float: bool = True) -> None:
        self.keep_first_and_last_float = keep_first_and_last_float
        self.global_config: ADQConfig | None = None
        self.object_type_configs: dict[type[nn.Module], ADQConfig | None] = {}
        self.module_name_regex_configs: dict[str, ADQConfig | None] = {}
        self.module_name_configs: dict[str, ADQConfig | None] = {}

    def __repr__(self) -> str:
        return (
            f"ADQConfigMapping(keep_first_and_last_float={self.keep_first_and_last_float}, "
            f"global={self.global_config}, object_type={self.object_type_configs}, "
            f"module_name_regex={self.module_name_regex_configs}, "
            f"module_name={self.module_name_configs})"
        )

    def set_global(self, config: ADQConfig | None) -> ADQConfigMapping:
        self.global_config = _checked(config, "set_global")
        return self

    def set_object_type(self, object_type: type[nn.Module], config: ADQConfig | None) -> ADQConfigMapping:
        if not (isinstance(object_type, type) and issubclass(object_type, nn.Module)):
            raise TypeError(f"set_object_type expects an nn.Module subclass, got {object_type!r}.")
        self.object_type_configs[object_type] = _checked(config, "set_object_type")
        return self

    def set_module_name_regex(self, regex: str, config: ADQConfig | None) -> ADQConfigMapping:
        try:
            re.compile(regex)
        except re.error as err:
            raise ValueError(f"set_module_name_regex({regex!r}): not a valid regex ({err}).") from err
        self.module_name_regex_configs[regex] = _checked(config, "set_module_name_regex")
        return self

    def set_module_name(self, module_name: str, config: ADQConfig | None) -> ADQConfigMapping:
        if not isinstance(module_name, str):
            raise TypeError(f"set_module_name expects a str, got {module_name!r}.")
        self.module_name_configs[module_name] = _checked(config, "set_module_name")
        return self

    # -- resolution -------------------------------------------------------
    def config_for(self, site: LayerSite) -> ADQConfig | None:
        """The config that applies to one layer, by the precedence above."""
        config = _lookup_module_name(self.module_name_configs, site.name)
        if config is not _MISSING:
            return cast("ADQConfig | None", config)
        for regex, regex_config in self.module_name_regex_configs.items():
            if re.match(regex, site.name):
                return regex_config
        if self.keep_first_and_last_float and (site.is_first_conv or site.is_last_linear):
            return None
        if site.module_type in self.object_type_configs:
            return self.object_type_configs[site.module_type]
        return self.global_config

    def check_all_entries_used(self, sites: list[LayerSite], all_module_names: set[str]) -> None:
        """Raise for an entry that matches no quantizable layer: a typo must not pass silently."""
        names = [site.name for site in sites]
        types = {site.module_type for site in sites}
        supported = ", ".join(sorted({t.__name__ for t in types})) or "none"
        for object_type in self.object_type_configs:
            if object_type not in types:
                raise ValueError(
                    f"set_object_type({object_type.__name__}) matches no quantizable layer in this "
                    f"model (quantizable types present: {supported}); remove the entry."
                )
        for regex in self.module_name_regex_configs:
            if not any(re.match(regex, name) for name in names):
                raise ValueError(
                    f"set_module_name_regex({regex!r}) matches no quantizable layer; "
                    f"layer names look like {names[:3]}."
                )
        for module_name in self.module_name_configs:
            covers = any(n == module_name or n.startswith(module_name + ".") for n in names)
            if not covers:
                hint = "it is not a Conv2d/Linear" if module_name in all_module_names else "no such module"
                raise ValueError(
                    f"set_module_name({module_name!r}) matches no quantizable layer ({hint}); "
                    f"layer names look like {names[:3]}."
                )


def default_qconfig_mapping(bits: int = 3, *, keep_first_and_last_float: bool = True) -> ADQConfigMapping:
    """Every Conv2d/Linear at ``bits`` (weights and activations), first conv and last linear float."""
    mapping = ADQConfigMapping(keep_first_and_last_float=keep_first_and_last_float)
    return mapping.set_global(ADQConfig.with_bits(bits))


def qconfig_mapping_from_plan(
    plan: Mapping[str, tuple[int, int]], base: ADQConfig | None = None
) -> ADQConfigMapping:
    """A bit plan ``{layer name: (weight_bits, activation_bits)}`` as a mapping.

    Layers in the plan get ``base`` (default ADQConfig()) at their bits; every
    other layer stays float, so the plan alone says what is quantized.
    """
    base = ADQConfig() if base is None else base
    mapping = ADQConfigMapping(keep_first_and_last_float=False)
    for name, bits in plan.items():
        try:
            weight_bits, activation_bits = bits
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"bit plan entry {name!r}: {bits!r} is not a (weight_bits, activation_bits) pair."
            ) from err
        mapping.set_module_name(
            name,
            ADQConfig(
                weight=replace(base.weight, bits=weight_bits),
                activation=replace(base.activation, bits=activation_bits),
            ),
        )
    return mapping


def qconfig_mapping_from_map(quantization_map: Mapping[str, Mapping[str, Any]]) -> ADQConfigMapping:
    """Rebuild the mapping a model was prepared with from its saved ``quantization_map``.

    Layers in the map get their exact configs (the signedness decided at
    prepare time is pinned); every other layer stays float. Prepare the float
    model with it, then load the checkpoint's state_dict.
    """
    mapping = ADQConfigMapping(keep_first_and_last_float=False)
    for name, entry in quantization_map.items():
        try:
            weight_type = entry_named("weight", entry.get("weight_method", "adq")).config
            activation_type = entry_named("activation", entry.get("activation_method", "n2uq")).config
            activation = dict(entry["activation_config"], signed=entry["activation_signed"])
            weight = {**getattr(weight_type, "values_before_field", {}), **entry["weight_config"]}
            config = ADQConfig(weight=weight_type(**weight), activation=activation_type(**activation))
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"quantization map entry {name!r} lacks or has a bad {err}; pass the dict that "
                "adq_fx.quantization_map returned for the checkpoint."
            ) from err
        mapping.set_module_name(name, config)
    return mapping


def _checked(config: ADQConfig | None, method: str) -> ADQConfig | None:
    if config is not None and not isinstance(config, ADQConfig):
        raise TypeError(f"{method} expects an ADQConfig or None (keep float), got {type(config).__name__}.")
    return config


def _lookup_module_name(table: dict[str, ADQConfig | None], name: str) -> object:
    """Exact name, else the nearest configured ancestor, as torch.ao does."""
    while True:
        if name in table:
            return table[name]
        if "." not in name:
            return table.get("", _MISSING)
        name = name.rsplit(".", 1)[0]
