"""Every state_dict value is a tensor: safetensors, tensor-only copies and old checkpoints all load."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import fx, nn

from adq_fx import (
    ADQConfig,
    ADQConfigMapping,
    ASQActivationConfig,
    CodebookWeightConfig,
    LSQActivationConfig,
    LSQWeightConfig,
    POSTWeightConfig,
    ThresholdActivationConfig,
    UniformWeightConfig,
    convert_adq,
    load_converted,
    prepare_adq,
    qconfig_mapping_from_map,
    quantization_map,
    registry,
)
from adq_fx.int8 import onednn
from adq_fx.quantizers.checkpoint_layout import CheckedLayout, saved_layout
from tests.models import TinyResNet, images

WEIGHTS = {
    "adq": CodebookWeightConfig(bits=3),
    "lsq": LSQWeightConfig(bits=3),
    "n2uq": UniformWeightConfig(bits=3),
    "post": POSTWeightConfig(bits=3),
}
ACTIVATIONS = {
    "n2uq": ThresholdActivationConfig(bits=3),
    "lsq": LSQActivationConfig(bits=3),
    "asq": ASQActivationConfig(bits=3),
}
ALL_KINDS = [(w, a) for w in WEIGHTS for a in ACTIVATIONS]
STAGES = ["prepared", "reference", "int8"]

needs_kernels = pytest.mark.skipif(
    onednn.kernel_problem() is not None, reason=f"no int8 kernels here: {onednn.kernel_problem()}"
)
X = images(8)


def _mapping(weight: str, activation: str) -> ADQConfigMapping:
    return ADQConfigMapping().set_global(
        ADQConfig(weight=WEIGHTS[weight], activation=ACTIVATIONS[activation])
    )


@functools.cache
def _prepared(weight: str, activation: str) -> fx.GraphModule:
    """A prepared TinyResNet past its first batch (data inits run, EMA moved), in eval mode.

    Cached: tests only read it (state_dict, eval forwards) or convert it, which copies it."""
    torch.manual_seed(0)
    prepared = prepare_adq(TinyResNet(), _mapping(weight, activation), X)
    prepared(X)
    return prepared.eval()


def _model(stage: str, weight: str, activation: str) -> nn.Module:
    prepared = _prepared(weight, activation)
    return prepared if stage == "prepared" else convert_adq(prepared, backend=stage)


def _skeleton(stage: str, source: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh ``stage`` model from the saved map alone (another float init), loaded with ``state``."""
    torch.manual_seed(1)
    qmap = quantization_map(source)
    if stage != "prepared":
        return load_converted(TinyResNet(), state, qmap, X, backend=stage)
    fresh = prepare_adq(TinyResNet(), qconfig_mapping_from_map(qmap), X).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(X), source(X))  # so equal outputs below come from the load
    fresh.load_state_dict(state)
    return fresh.eval()


def _assert_same_outputs(a: nn.Module, b: nn.Module) -> None:
    with torch.no_grad():
        assert torch.equal(a(X), b(X))


def _marks(stage: str) -> list[pytest.MarkDecorator]:
    return [needs_kernels] if stage == "int8" else []


EVERY_STAGE_AND_KIND = [
    pytest.param(stage, w, a, marks=_marks(stage), id=f"{stage}-{w}-{a}")
    for stage in STAGES
    for w, a in ALL_KINDS
]
EVERY_STAGE = [pytest.param(stage, marks=_marks(stage)) for stage in STAGES]


def test_the_kind_lists_cover_every_registered_quantizer() -> None:
    assert set(WEIGHTS) == set(registry.names("weight"))
    assert set(ACTIVATIONS) == set(registry.names("activation"))


@pytest.mark.parametrize(("stage", "weight", "activation"), EVERY_STAGE_AND_KIND)
def test_every_state_dict_value_is_a_tensor(stage: str, weight: str, activation: str) -> None:
    model = _model(stage, weight, activation)
    state = model.state_dict()
    assert any(k.endswith("_extra_state") for k in state)
    wrong = {k: type(v).__name__ for k, v in state.items() if not isinstance(v, torch.Tensor)}
    assert not wrong
    for name, module in model.named_modules():
        if isinstance(module, CheckedLayout):  # PyTorch's format version, recorded per module
            assert state._metadata[name]["version"] == CheckedLayout._version == 2, name  # type: ignore[attr-defined]


@pytest.mark.parametrize(("stage", "weight", "activation"), EVERY_STAGE_AND_KIND)
def test_safetensors_round_trip_gives_equal_outputs(
    stage: str, weight: str, activation: str, tmp_path: Path
) -> None:
    model = _model(stage, weight, activation)
    save_file(model.state_dict(), tmp_path / "model.safetensors")  # no clone or contiguous() needed
    fresh = _skeleton(stage, model, load_file(tmp_path / "model.safetensors"))
    _assert_same_outputs(fresh, model)


@pytest.mark.parametrize("stage", EVERY_STAGE)
def test_a_tensor_only_copy_of_the_state_dict_loads_back(stage: str) -> None:
    model = _model(stage, "lsq", "asq")
    copied = {k: v.clone() for k, v in model.state_dict().items()}
    _assert_same_outputs(_skeleton(stage, model, copied), model)


def _lsq(bits: int) -> fx.GraphModule:
    config = ADQConfig(weight=LSQWeightConfig(bits=bits), activation=LSQActivationConfig(bits=bits))
    return prepare_adq(TinyResNet(), ADQConfigMapping().set_global(config), X)


LAYOUT_ERROR = (
    r"^layer1\.conv1\.weight_quantizer: the state_dict was saved with \{'method': 'lsq', 'bits': 3, "
    r"'levels': 8\}, but this model was prepared with \{'method': 'lsq', 'bits': 2, 'levels': 4\}\. "
    r"Prepare the model with the same qconfig mapping"
)


@pytest.mark.parametrize("via_safetensors", [False, True], ids=["state_dict", "safetensors"])
def test_a_3_bit_lsq_checkpoint_is_refused_by_a_2_bit_model_naming_the_module(
    via_safetensors: bool, tmp_path: Path
) -> None:
    state = _lsq(3).state_dict()
    if via_safetensors:
        save_file(state, tmp_path / "three.safetensors")
        state = load_file(tmp_path / "three.safetensors")
    assert all(state[k].shape == v.shape for k, v in _lsq(2).state_dict().items())  # no shape tells
    with pytest.raises(ValueError, match=LAYOUT_ERROR):
        _lsq(2).load_state_dict(state)


@pytest.mark.parametrize("stage", EVERY_STAGE)
def test_an_old_checkpoint_with_dict_layouts_still_loads(stage: str) -> None:
    model = _model(stage, "adq", "n2uq")
    old = {k: saved_layout(v) if k.endswith("_extra_state") else v for k, v in model.state_dict().items()}
    assert any(isinstance(v, dict) for v in old.values())
    _assert_same_outputs(_skeleton(stage, model, old), model)


def test_a_cast_layout_tensor_is_refused_with_what_to_do() -> None:
    state = _lsq(3).state_dict()
    state["layer1.conv1.weight_quantizer._extra_state"] = state[
        "layer1.conv1.weight_quantizer._extra_state"
    ].float()
    with pytest.raises(
        ValueError,
        match=r"^layer1\.conv1\.weight_quantizer: its _extra_state should be the 1-D uint8 tensor .* "
        r"holds a torch\.float32 tensor of shape \(\d+,\)\. Save model\.state_dict\(\) without casting",
    ):
        _lsq(3).load_state_dict(state)


def test_a_damaged_layout_tensor_is_refused_naming_the_module() -> None:
    with pytest.raises(ValueError, match=r"^fc: its _extra_state tensor does not hold the JSON layout"):
        saved_layout(torch.tensor([0xFF, 0x7B], dtype=torch.uint8), "fc")
    with pytest.raises(ValueError, match=r"^fc: its _extra_state tensor does not hold the JSON layout"):
        saved_layout(torch.tensor(list(b"[1, 2]"), dtype=torch.uint8), "fc")


@needs_kernels
def test_an_int8_state_dict_with_the_float_stems_batchnorm_apart_still_loads() -> None:
    """Models converted before float BatchNorm folding keep the stem's BatchNorm: load_converted
    rebuilds that layout from the state_dict's keys, and the load is exact."""
    prepared = _prepared("adq", "n2uq")
    old_layout = convert_adq(prepared, backend="int8", fold_float_batchnorm=False)
    assert "bn.running_mean" in old_layout.state_dict()
    assert "bn.running_mean" not in convert_adq(prepared, backend="int8").state_dict()
    restored = _skeleton("int8", old_layout, old_layout.state_dict())
    assert "bn.running_mean" in restored.state_dict()
    _assert_same_outputs(restored, old_layout)
