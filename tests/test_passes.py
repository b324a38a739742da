"""prepare_adq / convert_adq on whole models: graph rewrite, mapping, signs, numerical contract, state."""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

import adq_fx
from adq_fx import (
    ADQConfig,
    ADQConfigMapping,
    CodebookWeightConfig,
    ThresholdActivationConfig,
    calibrate,
    convert_adq,
    default_qconfig_mapping,
    prepare_adq,
    quantization_map,
)
from adq_fx.nn import LUTConv2d, LUTLinear, QATConv2d, QATLinear, ThresholdEncoder
from adq_fx.quantizers import ThresholdActivationQuantizer
from tests.models import QUANTIZED_BY_DEFAULT, FunctionalNet, SignedNet, TinyResNet, images

QAT = (QATConv2d, QATLinear)
LUT = (LUTConv2d, LUTLinear)


def train(
    prepared: fx.GraphModule,
    x: torch.Tensor,
    steps: int = 3,
    *,
    cross_entropy: bool = False,
    lr: float = 0.01,
    quantizer_lr_scale: float = 0.01,
    freeze_bn: bool = False,
) -> fx.GraphModule:
    """A few SGD steps in train mode (task loss + commitment loss); returns the model in eval mode.

    The threshold parameters get a gradient summed over every activation, so, as in N2UQ and the
    training engine, they get a smaller learning rate (else they jump out of the activation range).
    ``freeze_bn`` keeps BatchNorm on its running statistics (batch statistics of 2 images at 1x1
    spatial size, as in ResNet-18's last stage on 32x32 inputs, give exploding gradients).
    """
    prepared.train()
    if freeze_bn:
        for m in prepared.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    thresholds = {
        id(p)
        for m in prepared.modules()
        if isinstance(m, ThresholdActivationQuantizer)
        for p in m.parameters()
    }
    optimizer = torch.optim.SGD(
        [
            {"params": [p for p in prepared.parameters() if id(p) not in thresholds]},
            {
                "params": [p for p in prepared.parameters() if id(p) in thresholds],
                "lr": lr * quantizer_lr_scale,
            },
        ],
        lr=lr,
        momentum=0.9,
    )
    targets = torch.arange(x.shape[0]) % 5
    for _ in range(steps):
        out = prepared(x)
        task = F.cross_entropy(out, targets) if cross_entropy else out.sum()
        loss = task + adq_fx.commitment_loss(prepared)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return prepared.eval()


def snapshot(module: nn.Module) -> dict[str, object]:
    return {
        k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in module.state_dict().items()
    }


def assert_state_equal(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def layer_types(model: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules() if name}


@pytest.fixture(scope="module")
def trained_resnet() -> tuple[TinyResNet, torch.Tensor, fx.GraphModule]:
    torch.manual_seed(0)
    model, x = TinyResNet().eval(), images(8)
    prepared = train(prepare_adq(model, default_qconfig_mapping(3), x), x, cross_entropy=True)
    return model, x, prepared


# --------------------------------------------------------------------------- prepare: graph rewrite
def test_prepare_returns_graph_module_with_a_quantizer_in_front_of_each_quantized_layer() -> None:
    torch.manual_seed(0)
    prepared = prepare_adq(TinyResNet(), default_qconfig_mapping(3), images())
    assert isinstance(prepared, fx.GraphModule)
    modules = dict(prepared.named_modules())
    quantized = [
        n for n in prepared.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], QAT)
    ]
    assert sorted(n.target for n in quantized) == sorted(QUANTIZED_BY_DEFAULT)
    for node in quantized:
        source = node.args[0]
        assert source.op == "call_module" and source.target == node.target + "_input_quantizer"
        assert isinstance(modules[source.target], ThresholdActivationQuantizer)
        assert list(source.users) == [node]
    # exactly one quantizer per quantized layer, none in front of float layers
    quantizers = [name for name, m in modules.items() if isinstance(m, ThresholdActivationQuantizer)]
    assert len(quantizers) == len(QUANTIZED_BY_DEFAULT)

    code = prepared.code
    for name in QUANTIZED_BY_DEFAULT:
        layer_var = name.replace(".", "_")
        quantizer_var = layer_var + "_input_quantizer"
        quantizer_line = re.search(rf"^\s*{quantizer_var} = .*_input_quantizer.*\(", code, re.M)
        layer_line = re.search(rf"^\s*{layer_var} = .*\({quantizer_var}\)", code, re.M)
        assert quantizer_line is not None and layer_line is not None, name
        assert quantizer_line.start() < layer_line.start(), name
    assert "stem_input_quantizer" not in code and "fc_input_quantizer" not in code


def test_prepare_and_training_do_not_mutate_the_input_model() -> None:
    torch.manual_seed(0)
    model, x = TinyResNet().eval(), images()
    state, types = snapshot(model), layer_types(model)
    with torch.no_grad():
        before = model(x)
    prepared = prepare_adq(model, default_qconfig_mapping(3, keep_first_and_last_float=False), x)
    train(prepared, x, steps=2)
    assert_state_equal(state, snapshot(model))
    assert layer_types(model) == types
    assert not isinstance(model, fx.GraphModule)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------- mapping at prepare time
def test_default_mapping_keeps_first_conv_and_last_linear_float() -> None:
    prepared = prepare_adq(TinyResNet(), default_qconfig_mapping(3), images())
    assert type(prepared.stem) is nn.Conv2d
    assert type(prepared.fc) is nn.Linear
    for name in QUANTIZED_BY_DEFAULT:
        assert isinstance(prepared.get_submodule(name), QATConv2d), name
    assert sorted(quantization_map(prepared)) == sorted(QUANTIZED_BY_DEFAULT)


def test_keep_first_and_last_float_false_quantizes_them_too() -> None:
    mapping = default_qconfig_mapping(3, keep_first_and_last_float=False)
    prepared = prepare_adq(TinyResNet(), mapping, images())
    assert isinstance(prepared.stem, QATConv2d)
    assert isinstance(prepared.fc, QATLinear)
    assert sorted(quantization_map(prepared)) == sorted([*QUANTIZED_BY_DEFAULT, "stem", "fc"])


def test_object_type_none_keeps_linears_float() -> None:
    mapping = default_qconfig_mapping(3).set_object_type(nn.Linear, None)
    prepared = prepare_adq(SignedNet(), mapping, images())
    assert type(prepared.hidden) is nn.Linear
    assert type(prepared.fc) is nn.Linear
    assert sorted(quantization_map(prepared)) == ["conv_a", "conv_b"]


def test_module_name_on_a_parent_applies_to_its_children() -> None:
    mapping = default_qconfig_mapping(3).set_module_name("layer2", ADQConfig.with_bits(5))
    qmap = quantization_map(prepare_adq(TinyResNet(), mapping, images()))
    for name in ("layer2.conv1", "layer2.conv2", "layer2.downsample.0"):
        assert qmap[name]["weight_bits"] == 5 and qmap[name]["activation_bits"] == 5, name
    for name in ("layer1.conv1", "layer1.conv2"):
        assert qmap[name]["weight_bits"] == 3 and qmap[name]["activation_bits"] == 3, name

    # None on a parent keeps the whole subtree float
    mapping = default_qconfig_mapping(3).set_module_name("layer2", None)
    prepared = prepare_adq(TinyResNet(), mapping, images())
    assert sorted(quantization_map(prepared)) == ["layer1.conv1", "layer1.conv2"]
    assert type(prepared.layer2.conv1) is nn.Conv2d


def test_module_name_beats_regex_beats_first_last_rule_beats_object_type_beats_global() -> None:
    mapping = (
        ADQConfigMapping()
        .set_global(ADQConfig.with_bits(2))
        .set_object_type(nn.Conv2d, ADQConfig.with_bits(4))
        .set_module_name_regex(r"^layer2\.", ADQConfig.with_bits(5))
        .set_module_name_regex(r"^fc$", ADQConfig.with_bits(7))
        .set_module_name("layer2.conv2", ADQConfig.with_bits(6))
    )
    prepared = prepare_adq(TinyResNet(), mapping, images())
    bits = {name: entry["weight_bits"] for name, entry in quantization_map(prepared).items()}
    assert bits == {
        "layer1.conv1": 4,  # object_type beats global
        "layer1.conv2": 4,
        "layer2.downsample.0": 5,  # regex beats object_type
        "layer2.conv1": 5,
        "layer2.conv2": 6,  # module_name beats regex
        "fc": 7,  # regex beats the last-linear rule
    }
    assert type(prepared.stem) is nn.Conv2d  # the first-conv rule beats object_type


def test_module_name_quantizes_the_first_conv_despite_keep_first_and_last_float() -> None:
    mapping = default_qconfig_mapping(3).set_module_name("stem", ADQConfig.with_bits(4))
    assert mapping.keep_first_and_last_float
    prepared = prepare_adq(TinyResNet(), mapping, images())
    assert isinstance(prepared.stem, QATConv2d)
    assert type(prepared.fc) is nn.Linear
    assert quantization_map(prepared)["stem"]["weight_bits"] == 4


def test_per_layer_bits_show_in_quantization_map() -> None:
    mapping = (
        default_qconfig_mapping(3)
        .set_module_name("layer1.conv2", ADQConfig.with_bits(2, 4))
        .set_module_name("layer2.conv1", ADQConfig.with_bits(8, 2))
    )
    qmap = quantization_map(prepare_adq(TinyResNet(), mapping, images()))
    got = {name: (e["weight_bits"], e["activation_bits"]) for name, e in qmap.items()}
    assert got == {
        "layer1.conv1": (3, 3),
        "layer1.conv2": (2, 4),
        "layer2.downsample.0": (3, 3),
        "layer2.conv1": (8, 2),
        "layer2.conv2": (3, 3),
    }
    assert len(qmap["layer1.conv2"]["codebook"]) == 2**2  # levels="full", the default: every code
    assert len(qmap["layer2.conv1"]["codebook"]) == 2**8


# --------------------------------------------------------------------------- sign detection
def signs(model: nn.Module) -> dict[str, bool]:
    return {name: entry["activation_signed"] for name, entry in quantization_map(model).items()}


def test_inputs_behind_relu_are_unsigned() -> None:
    assert signs(prepare_adq(TinyResNet(), None, images())) == dict.fromkeys(QUANTIZED_BY_DEFAULT, False)
    assert signs(prepare_adq(FunctionalNet(), None, images())) == {
        "conv2": False,
        "conv3": False,
        "hidden": False,
    }


def test_layer_fed_by_batchnorm_without_relu_is_signed() -> None:
    prepared = prepare_adq(SignedNet(), None, images())
    assert signs(prepared) == {"conv_a": False, "conv_b": True, "hidden": False}
    shift = prepared.conv_b_input_quantizer.shift
    assert isinstance(shift, nn.Parameter) and shift.shape == (8,)
    assert prepared.conv_a_input_quantizer.shift is None


def test_sign_of_the_model_input_comes_from_the_example_inputs() -> None:
    mapping = default_qconfig_mapping(3, keep_first_and_last_float=False)
    assert signs(prepare_adq(SignedNet(), mapping, images()))["stem"] is True  # randn
    assert signs(prepare_adq(SignedNet(), mapping, images().abs()))["stem"] is False


def test_activation_signed_config_overrides_detection() -> None:
    signed = ADQConfig(activation=ThresholdActivationConfig(bits=3, signed=True))
    unsigned = ADQConfig(activation=ThresholdActivationConfig(bits=3, signed=False))
    mapping = (
        default_qconfig_mapping(3)
        .set_module_name("conv_a", signed)  # behind a ReLU, forced signed
        .set_module_name("conv_b", unsigned)
    )  # behind a BatchNorm, forced unsigned
    x = images()
    prepared = prepare_adq(SignedNet(), mapping, x)
    assert signs(prepared) == {"conv_a": True, "conv_b": False, "hidden": False}
    assert prepared.conv_a_input_quantizer.shift is not None
    assert prepared.conv_b_input_quantizer.shift is None
    converted = convert_adq(train(prepared, x, steps=1), backend="reference")
    assert signs(converted) == {"conv_a": True, "conv_b": False, "hidden": False}


# --------------------------------------------------------------------------- numerical contract
def _tiny_resnet() -> tuple[nn.Module, torch.Tensor, ADQConfigMapping]:
    return TinyResNet(), images(8), default_qconfig_mapping(3)


def _functional() -> tuple[nn.Module, torch.Tensor, ADQConfigMapping]:
    return FunctionalNet(), images(8), default_qconfig_mapping(2, keep_first_and_last_float=False)


def _signed() -> tuple[nn.Module, torch.Tensor, ADQConfigMapping]:
    mapping = (
        default_qconfig_mapping(3, keep_first_and_last_float=False)
        .set_module_name("conv_b", ADQConfig.with_bits(2, 4))
        .set_module_name(
            "hidden",
            ADQConfig(
                weight=CodebookWeightConfig(bits=4, levels="full", pin_zero=False),
                activation=ThresholdActivationConfig(bits=3),
            ),
        )
    )
    return SignedNet(), images(8), mapping


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set BatchNorm running statistics to those of ``x``, as a pre-trained float model would have them
    (with the init statistics mean 0, var 1, eval-mode activations saturate every quantizer)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the batch statistics
    model.train()
    with torch.no_grad():
        model(x)
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def _resnet18() -> tuple[nn.Module, torch.Tensor, ADQConfigMapping]:
    model, x = torchvision.models.resnet18(num_classes=10), images(2, size=32)
    return calibrate_batchnorm(model, images(8, size=32, seed=1)), x, default_qconfig_mapping(3)


@pytest.mark.parametrize(
    ("build", "steps", "freeze_bn"),
    [(_tiny_resnet, 3, False), (_functional, 3, False), (_signed, 3, False), (_resnet18, 1, True)],
    ids=["tiny_resnet", "functional", "signed", "resnet18"],
)
def test_converted_model_computes_what_the_trained_prepared_model_computes(
    build: Callable[[], tuple[nn.Module, torch.Tensor, ADQConfigMapping]], steps: int, freeze_bn: bool
) -> None:
    torch.manual_seed(0)
    model, x, mapping = build()
    prepared = prepare_adq(model, mapping, x)
    initial = snapshot(prepared)
    train(prepared, x, steps, cross_entropy=True, freeze_bn=freeze_bn)
    # training moved the quantizers, so the contract is checked on a trained state
    moved = [
        k
        for k, v in snapshot(prepared).items()
        if isinstance(v, torch.Tensor) and v.dtype.is_floating_point and not torch.equal(v, initial[k])
    ]
    assert any("codebook" in k for k in moved) and any("intervals" in k for k in moved)

    converted = convert_adq(prepared, backend="reference")
    assert not converted.training
    codes: dict[str, torch.Tensor] = {}
    for name, module in converted.named_modules():
        if isinstance(module, ThresholdEncoder):
            module.register_forward_hook(lambda _m, _i, out, name=name: codes.__setitem__(name, out))
    fresh = torch.randn(x.shape, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        expected, got = prepared(fresh), converted(fresh)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert expected.abs().max() > 0
    assert len(torch.unique(expected, dim=0)) > 1  # the output depends on the input

    qmap = quantization_map(prepared)
    assert len(codes) == len(qmap)
    for name, out in codes.items():
        assert out.dtype == torch.uint8, name
        layer = name.removesuffix("_input_quantizer")
        assert int(out.max()) < 2 ** qmap[layer]["activation_bits"], name
        assert out.unique().numel() >= 2, name  # a live quantizer, so the contract is not vacuous

    luts = {name: m for name, m in converted.named_modules() if isinstance(m, LUT)}
    assert sorted(luts) == sorted(qmap)
    for name, lut in luts.items():
        assert lut.weight_codes.dtype == torch.uint8, name
        assert int(lut.weight_codes.max()) < lut.codebook.numel(), name
        assert not hasattr(lut, "weight"), name
        assert list(lut.parameters()) == [], name  # no float weight, nothing trainable
        assert "weight" not in dict(lut.named_buffers()), name
    assert not any(isinstance(m, (*QAT, ThresholdActivationQuantizer)) for m in converted.modules())


def test_convert_does_not_change_the_prepared_model(trained_resnet) -> None:
    _, x, prepared = trained_resnet
    state, types, code = snapshot(prepared), layer_types(prepared), prepared.code
    with torch.no_grad():
        before = prepared(x)
    converted = convert_adq(prepared, backend="reference")
    assert converted is not prepared
    assert not converted.training
    assert all(not m.training for m in converted.modules())
    assert_state_equal(state, snapshot(prepared))
    assert layer_types(prepared) == types
    assert prepared.code == code
    with torch.no_grad():
        assert torch.equal(prepared(x), before)


def test_convert_keeps_train_mode_of_prepared_untouched() -> None:
    prepared = calibrate(prepare_adq(TinyResNet(), None, images()), images())
    assert prepared.training
    converted = convert_adq(prepared, backend="reference")
    assert prepared.training and all(m.training for m in prepared.modules())
    assert not converted.training


def test_quantization_map_of_prepared_and_converted_agree(trained_resnet) -> None:
    model, _, prepared = trained_resnet
    converted = convert_adq(prepared, backend="reference")
    before, after = quantization_map(prepared), quantization_map(converted)
    assert sorted(before) == sorted(after) == sorted(QUANTIZED_BY_DEFAULT)
    for name in before:
        float_layer = model.get_submodule(name)
        assert before[name]["stage"] == "prepared" and after[name]["stage"] == "converted"
        for field in (
            "weight_bits",
            "activation_bits",
            "activation_signed",
            "codebook",
            "scale_shape",
            "num_params",
            "layer_type",
            "weight_config",
        ):
            assert before[name][field] == after[name][field], (name, field)
        assert before[name]["weight_bits"] == 3 and before[name]["activation_bits"] == 3
        assert before[name]["scale_shape"] == [float_layer.out_channels]
        assert before[name]["num_params"] == float_layer.weight.numel()
        assert before[name]["codebook"] == prepared.get_submodule(name).weight_quantizer.codebook.tolist()
        assert len(before[name]["codebook"]) == 8  # 3 bits, every code (levels="full")


# --------------------------------------------------------------------------- state_dict round trips
def test_prepared_state_dict_loads_into_a_freshly_prepared_model(trained_resnet) -> None:
    model, x, prepared = trained_resnet
    fresh = prepare_adq(model, default_qconfig_mapping(3), x).eval()
    fresh_x = images(4, seed=7)
    with torch.no_grad():
        assert not torch.equal(fresh(fresh_x), prepared(fresh_x))  # training changed something
    fresh.load_state_dict(prepared.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(fresh_x), prepared(fresh_x))
    assert_state_equal(snapshot(fresh), snapshot(prepared))


def test_prepared_state_dict_survives_torch_save_with_weights_only(trained_resnet) -> None:
    model, x, prepared = trained_resnet
    buffer = io.BytesIO()
    torch.save(prepared.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = prepare_adq(model, default_qconfig_mapping(3), x).eval()
    fresh.load_state_dict(loaded)
    with torch.no_grad():
        assert torch.equal(fresh(x), prepared(x))


def assert_state_dict_round_trip(source: nn.Module, fresh: nn.Module, x: torch.Tensor) -> None:
    """``fresh`` computes something else until it loads ``source``'s saved state_dict, then the same."""
    with torch.no_grad():
        assert not torch.equal(fresh(x), source(x))
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh(x), source(x))


def test_converted_state_dict_loads_into_a_fresh_converted_model(trained_resnet) -> None:
    model, x, prepared = trained_resnet
    converted = convert_adq(prepared, backend="reference")
    fresh = convert_adq(calibrate(prepare_adq(model, default_qconfig_mapping(3), x), x), backend="reference")
    assert_state_dict_round_trip(converted, fresh, images(4, seed=8))
    for name, lut in fresh.named_modules():
        if isinstance(lut, LUT):
            assert lut.weight_codes.dtype == torch.uint8, name


def test_convert_of_a_reloaded_prepared_model_matches(trained_resnet) -> None:
    model, x, prepared = trained_resnet
    fresh = prepare_adq(model, default_qconfig_mapping(3), x)
    fresh.load_state_dict(prepared.state_dict())
    a, b = convert_adq(fresh, backend="reference"), convert_adq(prepared, backend="reference")
    assert_state_equal(snapshot(a), snapshot(b))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# --------------------------------------------------------------------------- summaries
def test_commitment_loss_is_a_nonnegative_scalar_with_gradient_to_the_qat_weights() -> None:
    torch.manual_seed(0)
    prepared = prepare_adq(TinyResNet(), None, images())
    loss = adq_fx.commitment_loss(prepared)
    assert loss.dim() == 0 and loss.requires_grad
    assert float(loss.detach()) > 0  # random weights are not on the codebook

    # value: sum over layers of beta * mean((s * nearest codebook entry of w / s - w)^2) / mean(s^2),
    # the default layer units
    expected = torch.zeros(())
    for name in QUANTIZED_BY_DEFAULT:
        layer = prepared.get_submodule(name)
        q = layer.weight_quantizer
        assert q.config.commitment_units == "layer"
        s = q.scale.view(-1, 1, 1, 1)
        w = layer.weight.detach() / s
        nearest = q.codebook[(w.unsqueeze(-1) - q.codebook).abs().argmin(-1)]
        expected += q.config.commitment_beta * (s * (nearest - w)).pow(2).mean() / s.pow(2).mean()
    assert torch.allclose(loss.detach(), expected, rtol=1e-5, atol=1e-8)

    loss.backward()
    for name in QUANTIZED_BY_DEFAULT:
        layer = prepared.get_submodule(name)
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, name
        assert not layer.weight_quantizer.codebook.requires_grad
    assert prepared.stem.weight.grad is None and prepared.fc.weight.grad is None


def test_commitment_loss_is_zero_when_the_weights_sit_on_the_codebook() -> None:
    prepared = prepare_adq(TinyResNet(), None, images()).eval()  # eval: no codebook update
    with torch.no_grad():
        for name in QUANTIZED_BY_DEFAULT:
            layer = prepared.get_submodule(name)
            layer.weight.copy_(layer.weight_quantizer(layer.weight))
    assert float(adq_fx.commitment_loss(prepared).detach()) == pytest.approx(0.0, abs=1e-10)


def test_converted_model_is_smaller_than_the_float_model(trained_resnet) -> None:
    model, _, prepared = trained_resnet
    converted = convert_adq(prepared, backend="reference")
    float_bits = adq_fx.model_size_bits(model)
    assert float_bits == 8 * sum(
        t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]
    )
    quantized_weights = sum(model.get_submodule(n).weight.numel() for n in QUANTIZED_BY_DEFAULT)
    converted_bits = adq_fx.model_size_bits(converted)
    assert converted_bits < float_bits
    # 3-bit codes instead of 32-bit floats, minus a little for codebooks, scales and thresholds
    assert float_bits - converted_bits > 0.8 * (32 - 3) * quantized_weights
