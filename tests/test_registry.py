"""The quantizer registry: one registration makes a quantizer usable everywhere."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from adq_fx import (
    ADQConfig,
    ADQConfigMapping,
    ThresholdActivationConfig,
    convert_adq,
    load_converted,
    prepare_adq,
    qconfig_mapping_from_map,
    quantization_map,
    registry,
)
from adq_fx.cli import _add_train_flags
from adq_fx.nn import encoder_for
from adq_fx.quantizers import ActivationQuantizer, ThresholdActivationQuantizer, WeightQuantizer
from adq_fx.quantizers.checkpoint_layout import saved_layout
from adq_fx.train.config import TrainConfig
from tests.models import TinyResNet, images

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations inside a test vanish after it."""
    copied = {
        role: {name: dataclasses.replace(entry) for name, entry in entries.items()}
        for role, entries in registry._ENTRIES.items()
    }
    monkeypatch.setattr(registry, "_ENTRIES", copied)


def _design_example() -> dict[str, Any]:
    """Run docs/design.md's "adding a quantizer" listing as a module; return what it defined."""
    text = DESIGN.read_text()
    match = re.search(r"<!-- registry-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/design.md lost its registry example"
    module = types.ModuleType("design_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(match.group(1), str(DESIGN), "exec"), module.__dict__)  # our own docs
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


def _ternary_mapping(example: dict[str, Any]) -> ADQConfigMapping:
    return ADQConfigMapping().set_global(
        ADQConfig(weight=example["TernaryWeightConfig"](), activation=ThresholdActivationConfig(bits=3))
    )


def test_the_documented_quantizer_trains_converts_exactly_and_reloads(scratch_registry) -> None:
    example = _design_example()
    x = images(8)
    prepared = prepare_adq(TinyResNet(), _ternary_mapping(example), x)
    quantizers = [m for m in prepared.modules() if isinstance(m, example["TernaryWeightQuantizer"])]
    assert quantizers, "prepare_adq did not build the registered quantizer"
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        prepared(x).square().mean().backward()
        optimizer.step()
    prepared.eval()
    with torch.no_grad():
        trained = prepared(x)
    converted = convert_adq(prepared, backend="reference")
    with torch.no_grad():
        assert torch.equal(converted(x), trained)  # the LUT layer takes any (codes, levels, scale)
    qmap = quantization_map(converted)
    assert {e["weight_method"] for e in qmap.values()} == {"ternary"}
    mapping = qconfig_mapping_from_map(qmap)
    assert type(mapping.module_name_configs[next(iter(qmap))].weight) is example["TernaryWeightConfig"]
    reloaded = load_converted(TinyResNet(), converted.state_dict(), qmap, x, backend="reference")
    with torch.no_grad():
        assert torch.equal(reloaded(x), trained)


def test_a_registered_name_is_a_training_choice(scratch_registry) -> None:
    assert "ternary" not in registry.names("weight")
    with pytest.raises(ValueError, match=r"weight_quantizer='ternary'\) must be"):
        TrainConfig(weight_quantizer="ternary")
    _design_example()
    assert TrainConfig(weight_quantizer="ternary").weight_quantizer == "ternary"
    parser = argparse.ArgumentParser()
    _add_train_flags(parser)
    assert parser.parse_args(["--weight-quantizer", "ternary"]).weight_quantizer == "ternary"


def test_every_built_in_quantizer_has_one_name_and_activations_have_encoders() -> None:
    assert registry.names("weight") and registry.names("activation")
    for role in ("weight", "activation"):
        for name, entry in registry.entries(role).items():
            assert entry.config.method == name
            base = WeightQuantizer if role == "weight" else ActivationQuantizer
            assert issubclass(entry.quantizer, base)
            assert (entry.encoder is not None) == (role == "activation"), name
    assert set(registry.names("weight")) == {"adq", "n2uq", "lsq", "post"}
    assert set(registry.names("activation")) == {"n2uq", "lsq", "asq"}


def test_a_taken_name_a_missing_name_and_a_non_quantizer_are_refused(scratch_registry) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Clash:
        method: ClassVar[str] = "adq"
        bits: int = 3

    with pytest.raises(ValueError, match=r"weight quantizer name 'adq' is taken by CodebookWeightQuantizer"):
        registry.register_quantizer(Clash)(type("Other", (WeightQuantizer,), {}))

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Nameless:
        bits: int = 3

    with pytest.raises(TypeError, match=r"Nameless needs a class attribute method"):
        registry.register_quantizer(Nameless)

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Fine:
        method: ClassVar[str] = "fine"

    with pytest.raises(TypeError, match=r"Plain must subclass adq_fx.quantizers.WeightQuantizer"):
        registry.register_quantizer(Fine)(type("Plain", (nn.Module,), {}))
    with pytest.raises(TypeError, match=r"NoBuilder needs a classmethod from_quantizer"):
        registry.register_encoder(ThresholdActivationQuantizer)(type("NoBuilder", (nn.Module,), {}))
    with pytest.raises(TypeError, match=r"Plain is not a registered quantizer"):
        registry.register_encoder(type("Plain", (nn.Module,), {}))(
            type("Enc", (nn.Module,), {"from_quantizer": classmethod(lambda cls, q: cls())})
        )


def test_an_unregistered_config_and_an_unknown_name_get_a_way_out(scratch_registry) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Stray:
        bits: int = 3

    with pytest.raises(TypeError, match=r"got Stray\. A quantizer of your own is registered with"):
        ADQConfig(weight=Stray())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no weight quantizer is named 'ternery'; registered: "):
        registry.entry_named("weight", "ternery")


def test_an_activation_quantizer_without_an_encoder_cannot_convert_and_says_how(scratch_registry) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class HalfConfig:
        method: ClassVar[str] = "half"
        bits: int = 3

    @registry.register_quantizer(HalfConfig)
    class HalfQuantizer(ActivationQuantizer):
        pass

    with pytest.raises(
        TypeError,
        match=r"HalfQuantizer has no converted form: decorate its encoder class "
        r"with adq_fx.registry.register_encoder\(HalfQuantizer\)",
    ):
        encoder_for(HalfQuantizer())


def test_checkpoints_and_maps_with_pre_registry_names_still_load() -> None:
    x = images(8)
    mapping = ADQConfigMapping().set_global(ADQConfig.with_bits(3))
    prepared = prepare_adq(TinyResNet(), mapping, x)
    prepared(x)
    old = {}
    for key, value in prepared.state_dict().items():
        if key.endswith("_extra_state"):  # a dict with the old names, as a release before the registry
            value = {
                k: {"adq": "adq_codebook", "n2uq": "n2uq_thresholds"}.get(v, v) if k == "method" else v
                for k, v in saved_layout(value).items()
            }
        old[key] = value
    assert any(isinstance(v, dict) and v.get("method") == "adq_codebook" for v in old.values())
    fresh = prepare_adq(TinyResNet(), mapping, x)
    fresh.load_state_dict(old)
    fresh.eval(), prepared.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), prepared(x))
    qmap = {
        name: {**entry, "weight_method": "adq_codebook", "activation_method": "n2uq_thresholds"}
        for name, entry in quantization_map(prepared).items()
    }
    rebuilt = qconfig_mapping_from_map(qmap)
    assert rebuilt.module_name_configs.keys() == qmap.keys()


def test_the_old_config_names_still_import_with_a_deprecation_warning() -> None:
    import adq_fx
    import adq_fx.config

    with pytest.warns(DeprecationWarning, match=r"adq_fx\.WeightCodebookConfig is now CodebookWeightConfig"):
        assert adq_fx.WeightCodebookConfig is adq_fx.CodebookWeightConfig
    with pytest.warns(
        DeprecationWarning, match=r"config\.ActivationThresholdConfig is now ThresholdActivationC"
    ):
        assert adq_fx.config.ActivationThresholdConfig is adq_fx.ThresholdActivationConfig
    with pytest.raises(AttributeError, match=r"module 'adq_fx' has no attribute 'NoSuchConfig'"):
        adq_fx.NoSuchConfig  # noqa: B018
