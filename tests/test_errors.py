"""Every refusal says what went wrong, where (module or node) and what to do."""

from __future__ import annotations

import re

import pytest
import torch
from torch import fx, nn

from adq_fx import (
    ADQConfig,
    ADQConfigMapping,
    CodebookWeightConfig,
    LSQActivationConfig,
    ThresholdActivationConfig,
    calibrate,
    convert_adq,
    default_qconfig_mapping,
    prepare_adq,
    quantization_map,
)
from tests.models import DataDependent, DirectConv, SharedConv, SignedNet, TinyResNet, images


def test_untraceable_model_raises_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"torch\.fx cannot trace DataDependent") as info:
        prepare_adq(DataDependent(), None, images())
    message = str(info.value)
    assert "leaf module" in message and "concrete_args" in message  # what to do
    assert info.value.__cause__ is not None


def test_prepare_twice_raises() -> None:
    prepared = prepare_adq(TinyResNet(), None, images())
    with pytest.raises(ValueError, match="already prepared") as info:
        prepare_adq(prepared, None, images())
    assert "'layer1.conv1" in str(info.value)
    assert "load the prepared state_dict" in str(info.value)


def test_prepare_refuses_a_converted_model() -> None:
    x = images()
    converted = convert_adq(calibrate(prepare_adq(TinyResNet(), None, x), x), backend="reference")
    with pytest.raises(ValueError, match=r"already prepared or converted \('layer1\.conv1.*adq_fx module"):
        prepare_adq(converted, default_qconfig_mapping(3, keep_first_and_last_float=False), x)
    with pytest.raises(ValueError, match="already prepared or converted"):
        prepare_adq(converted, None, x)  # default mapping: the float stem and fc alone would pass


def test_convert_of_a_plain_module_raises() -> None:
    with pytest.raises(ValueError, match=r"TinyResNet has no adq_fx QAT layer; call prepare_adq"):
        convert_adq(TinyResNet(), backend="reference")


def test_convert_of_a_plain_traced_graph_module_raises() -> None:
    traced = fx.symbolic_trace(TinyResNet())
    with pytest.raises(ValueError, match=r"has no adq_fx QAT layer; call prepare_adq"):
        convert_adq(traced, backend="reference")


def test_convert_of_a_prepared_model_that_quantizes_nothing_raises() -> None:
    prepared = prepare_adq(TinyResNet(), ADQConfigMapping(), images())  # no global config: all float
    assert not any(n.endswith("_input_quantizer") for n, _ in prepared.named_modules())
    with pytest.raises(ValueError, match="call prepare_adq"):
        convert_adq(prepared, backend="reference")


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("where", ["weight", "buffer"])
def test_convert_refuses_a_diverged_model_naming_the_tensor(backend: str, where: str) -> None:
    x = images()
    prepared = calibrate(prepare_adq(TinyResNet(), None, x), x)
    with torch.no_grad():
        if where == "weight":
            prepared.get_submodule("layer1.conv1").weight[0, 0, 0, 0] = float("nan")
            name = "layer1.conv1.weight"
        else:
            prepared.get_submodule("layer1.bn1").running_var[1] = float("inf")
            name = "layer1.bn1.running_var"
    with pytest.raises(ValueError, match=re.escape(f"{name!r} holds 1 non-finite value(s)")) as info:
        convert_adq(prepared, backend=backend)  # type: ignore[arg-type]
    assert "checkpoint saved before" in str(info.value)


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("bits", [0, 1, 9, 16, -3, 2.5, True, "3"])
@pytest.mark.parametrize("config", [CodebookWeightConfig, ThresholdActivationConfig])
def test_bits_outside_2_to_8_are_refused(config: type, bits: object) -> None:
    expected = re.escape(f"{config.__name__}(bits={bits!r}) is not supported")
    with pytest.raises(ValueError, match=expected) as info:
        config(bits=bits)
    assert "from 2 to 8" in str(info.value)


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_bits_inside_2_to_8_are_accepted(bits: int) -> None:
    assert CodebookWeightConfig(bits=bits).bits == bits
    assert ThresholdActivationConfig(bits=bits).bits == bits


@pytest.mark.parametrize(("weight_bits", "activation_bits"), [(1, None), (9, None), (3, 1), (3, 9)])
def test_with_bits_refuses_unsupported_bits(weight_bits: int, activation_bits: int | None) -> None:
    with pytest.raises(ValueError, match="is not supported: use an integer from 2 to 8"):
        ADQConfig.with_bits(weight_bits, activation_bits)


def test_adq_config_refuses_swapped_parts() -> None:
    # the lists come from adq_fx.registry, by name: adq, lsq, n2uq, post and asq, lsq, n2uq
    with pytest.raises(
        TypeError,
        match=r"ADQConfig\(weight=...\) must be one of CodebookWeightConfig, "
        r"LSQWeightConfig, UniformWeightConfig, POSTWeightConfig; "
        r"got ThresholdActivationConfig",
    ):
        ADQConfig(weight=ThresholdActivationConfig())  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"ADQConfig\(activation=...\) must be one of "
        r"ASQActivationConfig, LSQActivationConfig, ThresholdActivationConfig; "
        r"got CodebookWeightConfig",
    ):
        ADQConfig(activation=CodebookWeightConfig())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- mapping entries
@pytest.mark.parametrize(
    ("entry", "configure"),
    [
        ("set_module_name('nope')", lambda m: m.set_module_name("nope", ADQConfig())),
        ("set_module_name('nope')", lambda m: m.set_module_name("nope", None)),
        ("set_module_name('layer1.conv')", lambda m: m.set_module_name("layer1.conv", ADQConfig())),
        ("set_module_name_regex('^zzz')", lambda m: m.set_module_name_regex("^zzz", ADQConfig())),
        ("set_object_type(Conv1d)", lambda m: m.set_object_type(nn.Conv1d, ADQConfig())),
    ],
)
def test_mapping_entry_that_matches_no_layer_raises_naming_the_entry(entry: str, configure) -> None:
    mapping = configure(default_qconfig_mapping(3))
    with pytest.raises(ValueError, match=re.escape(entry) + ".*matches no quantizable layer") as info:
        prepare_adq(TinyResNet(), mapping, images())
    message = str(info.value)
    assert "layer names look like" in message or "remove the entry" in message


def test_module_name_of_a_non_quantizable_module_says_so() -> None:
    mapping = default_qconfig_mapping(3).set_module_name("layer1.bn1", ADQConfig())
    with pytest.raises(ValueError, match=r"set_module_name\('layer1.bn1'\).*not a Conv2d/Linear"):
        prepare_adq(TinyResNet(), mapping, images())


def test_invalid_regex_is_refused_when_set() -> None:
    with pytest.raises(ValueError, match=r"set_module_name_regex\('\('\): not a valid regex"):
        ADQConfigMapping().set_module_name_regex("(", ADQConfig())


def test_mapping_setters_refuse_wrong_argument_types() -> None:
    with pytest.raises(TypeError, match="set_global expects an ADQConfig or None"):
        ADQConfigMapping().set_global(CodebookWeightConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"set_global expects an ADQConfig or None \(keep float\), got int"):
        ADQConfigMapping().set_global(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="set_module_name expects an ADQConfig or None"):
        ADQConfigMapping().set_module_name("fc", ThresholdActivationConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"set_object_type expects an nn\.Module subclass"):
        ADQConfigMapping().set_object_type("Conv2d", ADQConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="set_module_name expects a str"):
        ADQConfigMapping().set_module_name(nn.Conv2d, ADQConfig())  # type: ignore[arg-type]


@pytest.mark.parametrize("mapping", [{"": ADQConfig()}, ADQConfig(), "default"])
def test_non_adq_mapping_is_refused(mapping: object) -> None:
    with pytest.raises(
        TypeError, match=r"qconfig_mapping must be an adq_fx.ADQConfigMapping, got " + type(mapping).__name__
    ):
        prepare_adq(TinyResNet(), mapping, images())  # type: ignore[arg-type]


def test_torch_ao_qconfig_mapping_is_refused() -> None:
    from torch.ao.quantization import get_default_qconfig_mapping

    expected = r"got QConfigMapping; build one with adq_fx\.default_qconfig_mapping"
    with pytest.raises(TypeError, match=expected):
        prepare_adq(TinyResNet(), get_default_qconfig_mapping(), images())  # type: ignore[arg-type]


def test_prepare_refuses_a_non_module() -> None:
    with pytest.raises(TypeError, match=r"prepare_adq expects an nn\.Module, got function"):
        prepare_adq(lambda x: x, None, images())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- weights
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight_in_a_quantized_layer_is_named(bad: float) -> None:
    model = TinyResNet()
    with torch.no_grad():
        model.layer1.conv2.weight[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"layer1\.conv2\.weight contains NaN or Inf") as info:
        prepare_adq(model, None, images())
    assert "re-initialise that layer" in str(info.value)


def test_all_zero_weight_needs_normal_init() -> None:
    model = TinyResNet()
    with torch.no_grad():
        model.layer2.conv1.weight.zero_()
    with pytest.raises(ValueError, match=r"layer2\.conv1\.weight is all zeros.*init='normal'"):
        prepare_adq(model, None, images())
    normal = ADQConfig(weight=CodebookWeightConfig(init="normal"))
    mapping = default_qconfig_mapping(3).set_module_name("layer2.conv1", normal)
    prepared = prepare_adq(model, mapping, images())
    assert "layer2.conv1" in quantization_map(prepared)


# --------------------------------------------------------------------------- checkpoints
def test_state_dict_from_another_bit_width_names_the_layer() -> None:
    x = images()
    three = prepare_adq(TinyResNet(), default_qconfig_mapping(3), x)
    two = prepare_adq(TinyResNet(), default_qconfig_mapping(2), x)
    expected = r"^layer1\.conv1\.weight_quantizer: the state_dict was saved with"
    with pytest.raises(ValueError, match=expected) as info:
        two.load_state_dict(three.state_dict())
    message = str(info.value)
    assert "'bits': 3" in message and "'bits': 2" in message
    assert "same qconfig mapping" in message


def test_state_dict_from_another_activation_width_names_the_quantizer() -> None:
    x = images()
    saved = prepare_adq(
        TinyResNet(), default_qconfig_mapping(3).set_module_name("layer2.conv2", ADQConfig.with_bits(3, 4)), x
    )
    target = prepare_adq(TinyResNet(), default_qconfig_mapping(3), x)
    with pytest.raises(ValueError, match=r"^layer2\.conv2_input_quantizer: the state_dict was saved"):
        target.load_state_dict(saved.state_dict())


def test_state_dict_with_another_signedness_names_the_quantizer() -> None:
    x = images()
    signed = prepare_adq(SignedNet(), None, x)  # conv_b detected signed
    unsigned = prepare_adq(
        SignedNet(),
        default_qconfig_mapping(3).set_module_name(
            "conv_b", ADQConfig(activation=ThresholdActivationConfig(signed=False))
        ),
        x,
    )
    with pytest.raises(ValueError, match=r"^conv_b_input_quantizer: .*'signed': True.*'signed': False"):
        unsigned.load_state_dict(signed.state_dict())


def test_converted_state_dict_from_another_bit_width_names_the_layer() -> None:
    x = images()
    three = convert_adq(
        calibrate(prepare_adq(TinyResNet(), default_qconfig_mapping(3), x), x), backend="reference"
    )
    two = convert_adq(
        calibrate(prepare_adq(TinyResNet(), default_qconfig_mapping(2), x), x), backend="reference"
    )
    expected = r"^layer1\.conv1: the state_dict was saved with .*same qconfig mapping"
    with pytest.raises(ValueError, match=expected):
        two.load_state_dict(three.state_dict())


# --------------------------------------------------------------------------- graphs prepare cannot handle
def test_quantized_module_called_twice_raises() -> None:
    with pytest.raises(ValueError, match=r"module 'shared' is called 2 times") as info:
        prepare_adq(SharedConv(), None, images())
    assert "set_module_name(name, None)" in str(info.value)
    # the suggested fix works
    prepared = prepare_adq(SharedConv(), default_qconfig_mapping(3).set_module_name("shared", None), images())
    assert type(prepared.shared) is nn.Conv2d


def test_missing_example_inputs_raises() -> None:
    # Required in the signature, as in torch.ao's prepare_fx (it used to default to None).
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'example_inputs'"):
        prepare_adq(TinyResNet(), default_qconfig_mapping(3))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"prepare_adq needs example_inputs, e\.g\."):
        prepare_adq(TinyResNet(), default_qconfig_mapping(3), None)


def test_example_inputs_the_model_cannot_run_raise_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="could not run the model on example_inputs") as info:
        prepare_adq(SignedNet(), None, torch.randn(2, 7))
    assert "pass inputs the model accepts" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_example_inputs_are_checked_even_when_the_graph_decides_every_sign() -> None:
    with pytest.raises(RuntimeError, match="could not run the model on example_inputs"):
        prepare_adq(TinyResNet(), None, torch.randn(2, 7))


def test_too_few_example_inputs_raise_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="could not run the model on example_inputs"):
        prepare_adq(TinyResNet(), None, ())


def test_too_many_example_inputs_raise_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="could not run the model on example_inputs"):
        prepare_adq(TinyResNet(), None, (images(), images()))


def test_functional_conv_call_warns_naming_the_node() -> None:
    with pytest.warns(UserWarning, match=r"node 'conv2d'.*calls conv2d directly and stays float") as record:
        prepared = prepare_adq(DirectConv(), None, images())
    assert any("use one of those to quantize it" in str(w.message) for w in record)
    assert "conv" in quantization_map(prepared)  # the module conv is still quantized


class MyConv(nn.Conv2d):
    """A Conv2d subclass (it could change forward): prepare must not quantize it as a Conv2d."""


def _with_my_conv() -> TinyResNet:
    model = TinyResNet()
    old = model.layer1.conv2
    model.layer1.conv2 = MyConv(old.in_channels, old.out_channels, 3, padding=1, bias=False)
    return model


def test_conv2d_subclass_traced_through_warns_naming_the_node_and_module() -> None:
    with pytest.warns(UserWarning, match=r"node 'conv2d' inside 'layer1.conv2' calls conv2d directly"):
        prepared = prepare_adq(_with_my_conv(), None, images())
    assert "layer1.conv2" not in quantization_map(prepared)


def test_conv2d_subclass_kept_as_a_leaf_warns_and_stays_float() -> None:
    class LeafTracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, MyConv) or super().is_leaf_module(m, qualname)

    model = _with_my_conv()
    traced = fx.GraphModule(model, LeafTracer().trace(model))
    with pytest.warns(UserWarning, match=r"'layer1.conv2' is a MyConv, a subclass of nn.Conv2d"):
        prepared = prepare_adq(traced, None, images())
    assert type(prepared.layer1.conv2) is MyConv
    assert "layer1.conv2" not in quantization_map(prepared)
    assert "layer1.conv1" in quantization_map(prepared)


def test_summaries_refuse_a_model_without_quantized_layers() -> None:
    from adq_fx import commitment_loss

    with pytest.raises(ValueError, match="quantization_map: TinyResNet has no quantized layer"):
        quantization_map(TinyResNet())
    expected = "commitment_loss: TinyResNet has no adq_fx QAT layer; call prepare_adq"
    with pytest.raises(ValueError, match=expected):
        commitment_loss(TinyResNet())


@pytest.mark.parametrize(
    "activation",
    [ThresholdActivationConfig(bits=3, init="first_batch"), LSQActivationConfig(bits=3)],
    ids=["thresholds", "lsq"],
)
def test_convert_before_a_first_batch_init_has_seen_data_names_the_quantizer(activation) -> None:
    x = images(2)
    config = ADQConfig(weight=CodebookWeightConfig(bits=3), activation=activation)
    mapping = ADQConfigMapping().set_global(config)
    prepared = prepare_adq(TinyResNet().eval(), mapping, x)
    with pytest.raises(
        ValueError,
        match=r"input quantizer '[\w.]+_input_quantizer' .*has seen none; "
        r"train it first, or run one calibration forward.*adq_fx.calibrate",
    ):
        convert_adq(prepared, backend="reference")
    with torch.no_grad():
        prepared.eval()(x)  # one calibration forward is enough
    converted = convert_adq(prepared, backend="reference")
    with torch.no_grad():
        assert torch.equal(converted(x), prepared(x))
