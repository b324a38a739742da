"""convert_adq(backend="int8"): packed codes, the int8 grid, integer kernels against the reference."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import adq_fx
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
    calibrate,
    convert_adq,
    default_qconfig_mapping,
    model_size,
    prepare_adq,
    quantization_map,
)
from adq_fx.int8 import Int8Conv2d, Int8Linear, onednn, pack_codes, packed_size, to_int8_grid, unpack_codes
from adq_fx.int8.grid import TRAINING_GRID_STEP, snap_to_training_grid, weight_limit
from adq_fx.nn import LUTConv2d, LUTLinear
from tests.models import FunctionalNet, SignedNet, TinyResNet, images
from tests.test_passes import _resnet18, assert_state_dict_round_trip, train

FAST = settings(max_examples=40, deadline=None)
needs_kernels = pytest.mark.skipif(
    onednn.kernel_problem() is not None, reason=f"no int8 kernels here: {onednn.kernel_problem()}"
)
INT8 = (Int8Conv2d, Int8Linear)


# ----------------------------------------------------------------------------- packing
@FAST
@given(st.integers(1, 8), st.integers(0, 300), st.randoms(use_true_random=False))
def test_packed_codes_round_trip_at_their_width(bits: int, count: int, rng) -> None:
    codes = torch.tensor([rng.randrange(2**bits) for _ in range(count)], dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_size(count, bits) == -(-count * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, count), codes)


def test_packing_refuses_codes_wider_than_the_width_and_a_stream_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="does not fit in 2 bits"):
        pack_codes(torch.tensor([4], dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="expected a 1-D uint8 stream of 3 bytes"):
        unpack_codes(torch.zeros(2, dtype=torch.uint8), 3, 8)


# ----------------------------------------------------------------------------- the int8 grid
@pytest.mark.parametrize(
    "levels",
    [
        torch.arange(-4, 4, dtype=torch.float32),  # LSQ 3-bit
        adq_fx.functional.uniform_levels(2),  # N2UQ
        adq_fx.functional.uniform_levels(4),
        snap_to_training_grid(torch.tensor([-1.37, -0.41, 0.0, 0.52, 1.9])),  # int8_grid codebook
    ],
)
def test_levels_on_a_grid_map_exactly(levels: torch.Tensor) -> None:
    grid = to_int8_grid(levels)
    assert grid.exact
    assert torch.allclose(grid.integers.double() * grid.step, levels.double(), rtol=0, atol=1e-6)


@FAST
@given(st.lists(st.floats(-4, 4, width=32), min_size=2, max_size=16, unique=True), st.integers(2, 8))
def test_snapped_levels_are_within_half_a_step_and_inside_the_saturation_limit(values, act_bits) -> None:
    levels = torch.tensor(sorted(values))
    if not levels.abs().max() > 1e-3:
        return
    limit = weight_limit(act_bits)
    grid = to_int8_grid(levels, limit)
    assert int(grid.integers.abs().max()) <= limit
    assert 2 * limit * (2**act_bits - 1) <= 32767  # u8 x s8 pair sums never saturate (AVX2)
    error = (grid.integers.double() * grid.step - levels.double()).abs().max()
    assert float(error) <= grid.step / 2 + 1e-9
    peak = levels.double().abs().max()
    plain = (torch.round(levels.double() / (peak / limit)) * (peak / limit) - levels.double()).abs().max()
    assert float(error) <= float(plain) + 1e-12  # the step scan never does worse than peak / limit
    assert grid.max_error == pytest.approx(float(error) / float(levels.abs().max()), rel=1e-6, abs=1e-12)


def test_training_grid_keeps_codebooks_on_multiples_of_its_step() -> None:
    torch.manual_seed(0)
    x = images(8)
    mapping = ADQConfigMapping().set_global(ADQConfig(weight=CodebookWeightConfig(bits=3, int8_grid=True)))
    prepared = train(prepare_adq(TinyResNet(), mapping, x), x, steps=3, cross_entropy=True)
    for name, m in prepared.named_modules():
        if hasattr(m, "codebook") and not isinstance(m, (LUTConv2d, LUTLinear)):
            steps = m.codebook / TRAINING_GRID_STEP
            assert torch.equal(steps, steps.round()), name
            assert not torch.equal(m.ema_sums / m.ema_counts, m.codebook), name  # EMA state stays continuous


# ----------------------------------------------------------------------------- int8 vs reference
GRID_ADQ = ADQConfig(weight=CodebookWeightConfig(bits=3, int8_grid=True))
METHODS: dict[str, tuple[ADQConfig, bool]] = {  # config, on the grid (exact up to ties)
    "adq": (ADQConfig.with_bits(3), False),
    "adq_int8_grid": (GRID_ADQ, True),
    "adq_grid_lsq_signed": (
        ADQConfig(
            weight=CodebookWeightConfig(bits=3, int8_grid=True),
            activation=LSQActivationConfig(bits=3, signed=True),
        ),
        True,
    ),
    "n2uq": (
        ADQConfig(weight=UniformWeightConfig(bits=3), activation=ThresholdActivationConfig(bits=3)),
        True,
    ),
    "lsq": (ADQConfig(weight=LSQWeightConfig(bits=3), activation=LSQActivationConfig(bits=3)), True),
    "post": (ADQConfig(weight=POSTWeightConfig(bits=3), activation=LSQActivationConfig(bits=3)), False),
    "asq_lsq": (ADQConfig(weight=LSQWeightConfig(bits=3), activation=ASQActivationConfig(bits=3)), True),
    "adq_4bit_grid": (
        ADQConfig(
            weight=CodebookWeightConfig(bits=4, int8_grid=True), activation=ThresholdActivationConfig(bits=4)
        ),
        True,
    ),
}


def _grid_tiny_resnet(x: torch.Tensor, steps: int) -> nn.Module:
    """A TinyResNet with on-grid ADQ codebooks, trained ``steps`` steps on ``x``."""
    return train(
        prepare_adq(TinyResNet(), ADQConfigMapping().set_global(GRID_ADQ), x),
        x,
        steps=steps,
        cross_entropy=True,
    )


def _check_against_reference(
    prepared: nn.Module,
    x: torch.Tensor,
    *,
    on_grid: bool,
    fold_batchnorm: bool = True,
    min_close: float = 0.9,
) -> nn.Module:
    reference = convert_adq(prepared, backend="reference")
    int8 = convert_adq(prepared, backend="int8", fold_batchnorm=fold_batchnorm)
    assert any(isinstance(m, INT8) for m in int8.modules())
    assert not any(isinstance(m, (LUTConv2d, LUTLinear)) for m in int8.modules())
    with torch.no_grad():
        expected, got = reference(x), int8(x)
    peak = float(expected.abs().max())
    error = float((got - expected).abs().max())
    agreement = float((got.argmax(1) == expected.argmax(1)).float().mean())
    if on_grid:
        # Integer sums are exact; only float round-off differs, which can move a value across a
        # threshold (a tie) in a few elements: most samples match to round-off, all to a code step.
        close = ((got - expected).abs().amax(1) <= 1e-4 * peak).float().mean()
        assert float(close) >= min_close, (error, peak)
        assert agreement >= 0.95
    else:
        assert error <= 0.25 * peak, (error, peak)  # snapped levels: a bounded, reported change
        assert agreement >= 0.75
    return int8


@needs_kernels
@pytest.mark.parametrize("method", sorted(METHODS))
def test_int8_matches_the_reference_for_every_quantizer_kind(method: str) -> None:
    config, on_grid = METHODS[method]
    torch.manual_seed(0)
    x = images(8)
    prepared = train(
        prepare_adq(TinyResNet(), ADQConfigMapping().set_global(config), x), x, steps=3, cross_entropy=True
    )
    int8 = _check_against_reference(prepared, images(64, seed=3), on_grid=on_grid)
    qmap = quantization_map(int8)
    assert all(entry["grid_exact"] == on_grid for entry in qmap.values()), qmap


def _signed():
    mapping = (
        default_qconfig_mapping(3, keep_first_and_last_float=False)
        .set_global(GRID_ADQ)
        .set_module_name(
            "conv_b",
            ADQConfig(
                weight=CodebookWeightConfig(bits=2, int8_grid=True),
                activation=ThresholdActivationConfig(bits=4),
            ),
        )
    )
    return SignedNet(), images(8), mapping


def _functional():
    return FunctionalNet(), images(8), ADQConfigMapping(keep_first_and_last_float=False).set_global(GRID_ADQ)


def _resnet18_grid():
    model, x, _ = _resnet18()
    return model, x, default_qconfig_mapping(3).set_global(GRID_ADQ)


@needs_kernels
@pytest.mark.parametrize(
    ("build", "freeze_bn"),
    [(_signed, False), (_functional, False), (_resnet18_grid, True)],
    ids=["signed_inputs", "functional_calls", "resnet18"],
)
def test_int8_matches_the_reference_on_signed_functional_and_torchvision_models(
    build: Callable, freeze_bn: bool
) -> None:
    torch.manual_seed(0)
    model, x, mapping = build()
    prepared = train(prepare_adq(model, mapping, x), x, steps=1, cross_entropy=True, freeze_bn=freeze_bn)
    fresh = torch.randn((16, *x.shape[1:]), generator=torch.Generator().manual_seed(11))
    # 16 quantized layers deep, a tie anywhere changes a sample past round-off: fewer samples stay close.
    int8 = _check_against_reference(
        prepared, fresh, on_grid=True, min_close=0.75 if build is _resnet18_grid else 0.9
    )
    if build is _signed:
        assert int8.conv_b.input_offset is not None  # a signed threshold input: per-channel offset
        assert int8.hidden.input_offset is None  # ... folded into the bias for a linear layer


@needs_kernels
def test_batchnorm_folds_into_the_scale_and_bias_or_stays_when_asked() -> None:
    torch.manual_seed(0)
    x = images(8)
    prepared = _grid_tiny_resnet(x, steps=3)
    folded = _check_against_reference(prepared, images(32, seed=4), on_grid=True)
    kept = _check_against_reference(prepared, images(32, seed=4), on_grid=True, fold_batchnorm=False)
    bn_names = {n for n, m in prepared.named_modules() if isinstance(m, nn.BatchNorm2d)}
    # Every BatchNorm folds, the float stem's into its float conv (which gains a bias).
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert type(folded.stem) is nn.Conv2d and folded.stem.bias is not None
    assert {n for n, m in kept.named_modules() if isinstance(m, nn.BatchNorm2d)} == bn_names
    assert kept.stem.bias is None
    assert folded.layer1.conv1.folded_batchnorm and not kept.layer1.conv1.folded_batchnorm


@needs_kernels
def test_residual_add_and_relu_run_inside_the_kernel_without_touching_other_tensors() -> None:
    torch.manual_seed(0)
    x = images(8)
    prepared = _grid_tiny_resnet(x, steps=2)
    int8 = convert_adq(prepared, backend="int8")
    assert int8.layer1.conv1.relu and not int8.layer1.conv1.accumulates
    assert int8.layer1.conv2.relu and int8.layer1.conv2.accumulates
    targets = {n.target for n in int8.graph.nodes if n.op == "call_function"}
    assert not {torch.add, torch.relu} & targets and "add" not in {n.name for n in int8.graph.nodes}
    before = x.clone()
    with torch.no_grad():
        first, second = int8(x), int8(x)
    assert torch.equal(x, before) and torch.equal(first, second)  # the kernel writes no shared tensor


# ----------------------------------------------------------------------------- save and load
@pytest.fixture(scope="module")
def trained_grid_resnet():
    torch.manual_seed(0)
    x = images(8)
    prepared = _grid_tiny_resnet(x, steps=3)
    return prepared, x


@needs_kernels
def test_int8_state_dict_loads_into_a_skeleton_and_rebuilds_its_kernel_weights(trained_grid_resnet) -> None:
    prepared, x = trained_grid_resnet
    prepared = copy.deepcopy(prepared)
    with torch.no_grad():  # an input scale the skeleton does not share, so it must come from the state_dict
        prepared.layer1.conv2_input_quantizer.beta2.fill_(1.25)
    int8 = convert_adq(prepared, backend="int8")
    mapping = adq_fx.qconfig_mapping_from_map(quantization_map(prepared))
    skeleton = convert_adq(calibrate(prepare_adq(TinyResNet(), mapping, x), x), backend="int8")
    assert_state_dict_round_trip(int8, skeleton, images(4, seed=9))
    assert float(skeleton.layer1.conv2.input_scale) == float(int8.layer1.conv2.input_scale)
    assert all(isinstance(v, torch.Tensor) for v in int8.state_dict().values())
    assert int8.layer1.conv1.packed_codes.numel() == packed_size(8 * 8 * 9, 3)


@needs_kernels
def test_whole_int8_model_saves_and_loads_in_a_process_without_the_float_model(
    trained_grid_resnet, tmp_path
) -> None:
    prepared, x = trained_grid_resnet
    int8 = convert_adq(prepared, backend="int8")
    with torch.no_grad():
        expected = int8(x)
    torch.save(int8, tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    copy.deepcopy(int8)  # the opaque kernel weight is rebuilt, not copied
    script = (
        "import sys, torch, adq_fx\n"
        "assert 'tests.models' not in sys.modules\n"
        f"m = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False)\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(m(x), {str(tmp_path / 'out.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


# ----------------------------------------------------------------------------- sizes
@needs_kernels
def test_model_size_counts_packed_codes_and_what_ships_with_them() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = images(2, size=32)
    prepared = prepare_adq(model, default_qconfig_mapping(2), x)
    int8 = convert_adq(calibrate(prepared, x), backend="int8")
    sizes = {name: model_size(m) for name, m in (("float", model), ("prepared", prepared), ("int8", int8))}
    assert sizes["float"]["bits_per_weight"] == pytest.approx(32.0, abs=0.01)
    assert sizes["int8"]["weight_bits"] == 2.0
    assert 2.0 < sizes["int8"]["bits_per_weight"] <= 2.1  # 11 M weights: overheads are small
    assert sizes["int8"]["total_bytes"] < sizes["prepared"]["total_bytes"] < sizes["float"]["total_bytes"]
    codes = sum(m.packed_codes.numel() for m in int8.modules() if isinstance(m, INT8))
    assert codes == sum(packed_size(e["num_params"], 2) for e in quantization_map(int8).values())


# ----------------------------------------------------------------------------- refusals
def _prepared_tiny(config: ADQConfig | None = None) -> nn.Module:
    torch.manual_seed(0)
    x = images(4)
    mapping = default_qconfig_mapping(3) if config is None else ADQConfigMapping().set_global(config)
    return calibrate(prepare_adq(TinyResNet(), mapping, x), x).eval()


@needs_kernels
def test_exact_refuses_an_off_grid_codebook_naming_the_layer_and_the_fixes() -> None:
    with pytest.raises(ValueError, match=r"layer 'layer1.conv1'.*off_grid='snap'.*int8_grid=True"):
        convert_adq(_prepared_tiny(), backend="int8", off_grid="exact")
    convert_adq(_prepared_tiny(GRID_ADQ), backend="int8", off_grid="exact")  # on the grid: accepted


def test_missing_kernels_raise_for_int8_and_fall_back_once_with_a_warning_for_auto(monkeypatch) -> None:
    from adq_fx.passes import convert as convert_module

    monkeypatch.setattr(onednn, "kernel_problem", lambda: "this CPU has no int8 support (test)")
    monkeypatch.setattr(convert_module, "_warned_fallback", False)
    prepared = _prepared_tiny()
    with pytest.raises(adq_fx.Int8KernelsUnavailable, match=r"no int8 support.*backend='reference'"):
        convert_adq(prepared, backend="int8")
    with pytest.warns(UserWarning, match="no int8 support"):
        converted = convert_adq(prepared)
    assert isinstance(converted.layer1.conv1, LUTConv2d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert_adq(prepared)  # once per process


@needs_kernels
def test_a_layer_the_kernels_cannot_run_is_refused_by_int8_and_kept_on_the_reference_by_auto() -> None:
    prepared = _prepared_tiny()
    prepared.layer1.conv2.padding_mode = "reflect"
    with pytest.raises(ValueError, match=r"layer 'layer1.conv2' pads with padding_mode='reflect'"):
        convert_adq(prepared, backend="int8")
    with pytest.warns(UserWarning, match="layer1.conv2.*reference"):
        converted = convert_adq(prepared, backend="auto")
    assert isinstance(converted.layer1.conv2, LUTConv2d) and isinstance(converted.layer1.conv1, Int8Conv2d)


def test_convert_refuses_an_unknown_backend_or_grid_policy() -> None:
    prepared = _prepared_tiny()
    with pytest.raises(ValueError, match=r"backend='fast'.*must be one of"):
        convert_adq(prepared, backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"off_grid='round'.*must be one of"):
        convert_adq(prepared, off_grid="round")  # type: ignore[arg-type]


def test_int8_grid_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match=r"int8_grid=1\) must be True or False"):
        CodebookWeightConfig(int8_grid=1)  # type: ignore[arg-type]


@needs_kernels
def test_strided_one_by_one_convolution_is_exact_and_repeatable() -> None:
    """oneDNN's AVX2 1x1 stride-2 int8 conv on 8 channels gave run-to-run different sums; adq_fx
    subsamples first. The same codes must give the same exact result on every call."""
    torch.manual_seed(0)
    x = images(64, channels=8, size=8)
    float_model = nn.Sequential(
        nn.ReLU(), nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.Flatten(), nn.Linear(256, 4)
    )
    mapping = (
        ADQConfigMapping(keep_first_and_last_float=False)
        .set_global(GRID_ADQ)
        .set_object_type(nn.Linear, None)
    )
    prepared = calibrate(prepare_adq(float_model, mapping, x), x).eval()
    reference, int8 = convert_adq(prepared, backend="reference"), convert_adq(prepared, backend="int8")
    with torch.no_grad():
        expected = reference(x)
        for _ in range(20):
            _ = [torch.randn(64, 16, 8, 8) for _ in range(2)]  # allocations in between, as in a model
            assert (int8(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


# ----------------------------------------------------------------------------- the encoder
@FAST
@given(
    st.floats(2**-10, 2**10, width=32),
    st.lists(st.floats(-10, 10, width=32), min_size=1, max_size=15),
    st.integers(0, 2**31 - 1),
)
def test_encoder_comparing_the_input_gives_the_codes_of_the_scaled_search(beta1, thresholds, seed) -> None:
    beta = torch.tensor(beta1)
    t = torch.tensor(sorted(thresholds))
    moved = adq_fx.functional.input_space_thresholds(t, beta)
    if moved is None:  # no exact float threshold (T = 0: products underflow to -0.0); encoder keeps beta1 * x
        assert bool((t == 0).any())
        return
    g = torch.Generator().manual_seed(seed)
    base = (t / beta).repeat(8)
    near = base + torch.randint(-3, 4, (base.numel(),), generator=g) * base.abs() * 2e-7
    x = torch.cat(
        [
            near,
            torch.randn(200, generator=g) * 10 / beta,
            torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0]),
        ]
    )
    expected = torch.bucketize(beta * x, t, right=True)
    assert torch.equal(torch.bucketize(x, moved, right=True), expected)


# ----------------------------------------------------------------------------- compiled deployment
@needs_kernels
def test_a_converted_model_compiles_as_one_graph_and_computes_what_the_eager_one_does() -> None:
    torch.manual_seed(0)
    x = images(8)
    prepared = _grid_tiny_resnet(x, steps=2)
    int8 = convert_adq(prepared, backend="int8")
    explanation = torch._dynamo.explain(int8)(x)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
    compiled = adq_fx.compile_converted(int8, x)
    fresh = images(16, seed=5)
    with torch.no_grad():
        eager, got = int8(fresh), compiled(fresh)
        # Same integer sums; the float stem and epilogues may round differently, which can move a
        # value across a threshold (a tie): most samples match to round-off, all to a code step.
        peak = float(eager.abs().max())
        close = ((got - eager).abs().amax(1) <= 1e-4 * peak).float().mean()
        assert float(close) >= 0.9 and torch.equal(got.argmax(1), eager.argmax(1))
        # A private, frozen copy: loading other weights into the eager model leaves it as it was.
        before = compiled(fresh)
        scrambled = {k: v.flip(0) if v.dtype.is_floating_point else v for k, v in int8.state_dict().items()}
        int8.load_state_dict(scrambled)
        assert torch.equal(compiled(fresh), before)


def test_compile_converted_refuses_a_model_that_was_not_converted() -> None:
    with pytest.raises(ValueError, match=r"TinyResNet has no converted adq_fx layer.*convert_adq"):
        adq_fx.compile_converted(TinyResNet().eval(), images(2))


class _StemWithTwoReaders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.other = nn.Conv2d(3, 4, 3, padding=1)
        self.other_bn = nn.BatchNorm2d(4)
        self.shared = nn.Conv2d(3, 4, 3, padding=1)
        self.shared_bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        out = self.bn(y) + y + self.other_bn(self.other(x))  # conv's output has a second reader
        return out + self.shared_bn(self.shared(x)) + self.shared(x)  # one module, two calls


def test_a_float_conv_folds_its_batchnorm_only_when_nothing_else_reads_the_conv_output() -> None:
    from adq_fx.passes.fold_float import fold_float_batchnorm

    torch.manual_seed(0)
    model = _StemWithTwoReaders()
    model.train()
    with torch.no_grad():
        model(images(8))  # running statistics that are not the identity
    model.eval()
    gm = torch.fx.symbolic_trace(model)
    x = images(4, seed=2)
    with torch.no_grad():
        expected = gm(x)
        fold_float_batchnorm(gm)
        got = gm(x)
    names = {n for n, m in gm.named_modules() if isinstance(m, nn.BatchNorm2d)}
    # "other" folded; "conv" kept (folding would change what y's other reader sees), and "shared"
    # kept (its second call has no BatchNorm).
    assert names == {"bn", "shared_bn"}
    assert torch.allclose(got, expected, atol=1e-5 * float(expected.abs().max()))


def test_int8_refuses_input_levels_that_are_not_finite_and_names_the_layer() -> None:
    from adq_fx.int8.modules import uniform_encoding

    with pytest.raises(ValueError, match=r"layer 'layer1.conv2'.*not finite.*lower learning rate"):
        uniform_encoding(torch.tensor([0.0, float("nan"), 1.0, 1.5]), "convert_adq: layer 'layer1.conv2'")
