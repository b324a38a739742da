"""Saving a quantized model with its quantization map and loading it on a fresh process's terms."""

from __future__ import annotations

import io
import json

import pytest
import torch

import adq_fx
from adq_fx.train.models import DigitsCNN


def _mixed_mapping() -> adq_fx.ADQConfigMapping:
    return (
        adq_fx.default_qconfig_mapping(3)
        .set_module_name("conv3", adq_fx.ADQConfig.with_bits(2, 4))
        .set_module_name(
            "hidden",
            adq_fx.ADQConfig(
                weight=adq_fx.CodebookWeightConfig(bits=4, levels="full", pin_zero=False),
                activation=adq_fx.ThresholdActivationConfig(bits=3, signed=True),
            ),
        )
    )


def _trained(model: torch.nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    prepared = adq_fx.prepare_adq(model, _mixed_mapping(), x)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(3):
        loss = prepared(x).square().mean() + adq_fx.commitment_loss(prepared)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return prepared.eval()


def test_prepared_checkpoint_round_trips_through_its_json_map() -> None:
    torch.manual_seed(0)
    model, x = DigitsCNN(), torch.rand(16, 1, 8, 8)
    prepared = _trained(model, x)
    buffer = io.BytesIO()
    torch.save(
        {
            "state_dict": prepared.state_dict(),
            "quantization_map": json.dumps(adq_fx.quantization_map(prepared)),
        },
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    mapping = adq_fx.qconfig_mapping_from_map(json.loads(checkpoint["quantization_map"]))
    restored = adq_fx.prepare_adq(model, mapping, x)
    restored.load_state_dict(checkpoint["state_dict"])
    restored.eval()
    assert torch.equal(restored(x), prepared(x))

    def comparable(qmap: dict) -> dict:  # 'signed' goes from None (auto) to the decision made
        return {
            name: {k: v for k, v in entry.items() if k != "activation_config"} for name, entry in qmap.items()
        }

    assert comparable(adq_fx.quantization_map(restored)) == comparable(adq_fx.quantization_map(prepared))


def test_converted_checkpoint_round_trips_through_its_map() -> None:
    torch.manual_seed(1)
    model, x = DigitsCNN(), torch.rand(16, 1, 8, 8)
    converted = adq_fx.convert_adq(_trained(model, x), backend="reference")
    qmap = adq_fx.quantization_map(converted)
    assert qmap["conv3"]["weight_bits"] == 2 and qmap["conv3"]["activation_bits"] == 4
    assert qmap["hidden"]["weight_config"]["levels"] == "full" and qmap["hidden"]["activation_signed"]

    fresh = adq_fx.load_converted(model, converted.state_dict(), qmap, x, backend="reference")
    assert torch.equal(fresh(x), converted(x))


def test_signedness_is_pinned_by_the_map_not_the_new_example_inputs() -> None:
    model, x = DigitsCNN(), torch.rand(4, 1, 8, 8)
    prepared = adq_fx.prepare_adq(model, _mixed_mapping(), x)
    mapping = adq_fx.qconfig_mapping_from_map(adq_fx.quantization_map(prepared))
    again = adq_fx.prepare_adq(model, mapping, -x)  # examples of the other sign
    assert {k: v["activation_signed"] for k, v in adq_fx.quantization_map(again).items()} == {
        k: v["activation_signed"] for k, v in adq_fx.quantization_map(prepared).items()
    }


def test_a_map_saved_before_commitment_units_existed_keeps_training_as_it_did() -> None:
    model, x = DigitsCNN(), torch.rand(4, 1, 8, 8)
    qmap = adq_fx.quantization_map(adq_fx.prepare_adq(model, adq_fx.default_qconfig_mapping(3), x))
    old = json.loads(json.dumps(qmap))
    for entry in old.values():
        del entry["weight_config"]["commitment_units"]  # as written before the field (eq. (3) per channel)

    def units(saved: dict) -> set[str]:
        again = adq_fx.prepare_adq(model, adq_fx.qconfig_mapping_from_map(saved), x)
        return {e["weight_config"]["commitment_units"] for e in adq_fx.quantization_map(again).values()}

    assert units(qmap) == {"layer"}  # today's default round trips
    assert units(old) == {"channel"}  # the old map keeps the behaviour it trained with


def test_a_malformed_map_names_the_entry() -> None:
    with pytest.raises(ValueError, match="'conv2'"):
        adq_fx.qconfig_mapping_from_map({"conv2": {"weight_bits": 3}})
