"""The compiled kernels give what the eager path gives; failures fall back or raise as documented."""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Iterator

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import adq_fx
from adq_fx import functional as qf
from adq_fx import kernels
from tests.models import TinyResNet, images
from tests.test_passes import train

FEW = settings(max_examples=20, deadline=None)
anything = st.floats(width=32, allow_nan=True, allow_infinity=True)
finite = st.floats(min_value=-8.0, max_value=8.0, width=32)


# The compiled backend needs a C++ compiler (torch.compile's CPU code generator); the
# equivalence tests need it, the fallback tests below do not.
needs_compiler = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("clang++") or shutil.which("c++")),
    reason="no C++ compiler: the compiled kernels cannot be built here (auto falls back to eager)",
)


@pytest.fixture
def backend(monkeypatch) -> Iterator[None]:
    """A fresh "auto" state (no failure seen, compiled kernels dropped), restored afterwards."""
    previous = kernels.get_kernel_backend()
    monkeypatch.setattr(kernels, "_auto_failure", None)
    monkeypatch.setattr(kernels, "_compiled", {})
    with kernels.kernel_backend("auto"):
        yield
    assert kernels.get_kernel_backend() == previous


def both_backends(fn, *args):  # type: ignore[no-untyped-def]
    results = []
    for name in ("eager", "compiled"):
        with kernels.kernel_backend(name):
            results.append(fn(*args))
    return results


@settings(max_examples=60, deadline=None)
@given(
    st.lists(anything, min_size=1, max_size=64),
    st.lists(finite, min_size=1, max_size=70),
    st.booleans(),
    st.integers(min_value=0, max_value=3),
)
@example(
    values=[0.0, 1.0, 0.5, math.nan, math.inf, -math.inf], boundaries=[0.0, 1.0, 1.0], right=True, extra=0
)
@example(values=[2.0, -2.0, math.nan], boundaries=[0.0] * 7, right=False, extra=1)
def test_kernel_search_counts_like_bucketize_with_and_without_a_complete_tree(
    values, boundaries, right, extra
) -> None:
    """The compiled kernels' search, run eagerly: the binary search over a table padded to
    2^d - 1 entries, and the compare-every-entry count over any other length (``extra`` NaNs
    more), both give torch.bucketize's answer; NaN values get the number of real boundaries."""
    v, b = torch.tensor(values), torch.tensor(sorted(boundaries))
    padded = kernels._pad(b)
    assert padded.numel() + 1 & padded.numel() == 0 and padded.numel() >= b.numel()  # 2^d - 1
    padded = torch.cat([padded, torch.full((extra,), math.nan)])
    expected = torch.bucketize(v, b, right=right, out_int32=True)
    assert torch.equal(kernels._count(v, padded, right), expected)
    if right:
        assert torch.equal(kernels._count_uint8(v, padded), expected.to(torch.uint8))


@needs_compiler
@FEW
@given(st.lists(anything, min_size=1, max_size=64), st.lists(finite, min_size=1, max_size=20), st.booleans())
@example(values=[0.0, 1.0, 0.5, math.nan, math.inf, -math.inf], boundaries=[0.0, 1.0, 1.0], right=True)
@example(values=[0.0, 1.0, 0.5, math.nan, math.inf, -math.inf], boundaries=[0.0, 1.0, 1.0], right=False)
def test_compiled_search_is_bucketize_for_any_value_nan_and_inf_included(values, boundaries, right) -> None:
    v, b = torch.tensor(values), torch.tensor(sorted(boundaries))
    eager, compiled = both_backends(lambda: kernels.bucketize(v, b, right=right, out_int32=True))
    assert torch.equal(eager, torch.bucketize(v, b, right=right, out_int32=True))
    assert compiled.dtype == torch.int32 and torch.equal(compiled, eager), (v, b, compiled, eager)


@needs_compiler
@FEW
@given(st.lists(anything, min_size=1, max_size=64), st.lists(finite, min_size=1, max_size=20))
@example(values=[0.0, 1.0, 0.5, math.nan, math.inf, -math.inf], boundaries=[0.0, 1.0, 1.0])
def test_compiled_encoder_codes_are_uint8_bucketize_for_any_value(values, boundaries) -> None:
    v, b = torch.tensor(values), torch.tensor(sorted(boundaries))
    eager, compiled = both_backends(lambda: kernels.threshold_codes(v, b))
    assert torch.equal(eager, torch.bucketize(v, b, right=True).to(torch.uint8))
    assert compiled.dtype == torch.uint8 and torch.equal(compiled, eager), (v, b, compiled, eager)
    x = torch.randn(2, 5, 3, 4).to(memory_format=torch.channels_last)
    eager, compiled = both_backends(lambda: kernels.threshold_codes(x, b))
    assert compiled.is_contiguous(memory_format=torch.channels_last) and torch.equal(compiled, eager)


@needs_compiler
def test_compiled_search_keeps_shape_layout_and_index_dtype() -> None:
    x = torch.randn(2, 5, 3, 4).to(memory_format=torch.channels_last)
    b = torch.linspace(-1, 1, 7)
    eager, compiled = both_backends(lambda: kernels.bucketize(x, b))
    assert compiled.dtype == torch.int64 and compiled.shape == x.shape
    assert compiled.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(compiled, eager)
    strided = torch.randn(6, 8)[:, ::2]  # neither contiguous nor channels_last: a copy, same answer
    eager, compiled = both_backends(lambda: kernels.bucketize(strided, b, right=True))
    assert torch.equal(compiled, eager)


@needs_compiler
@FEW
@given(st.integers(min_value=2, max_value=4), st.integers(min_value=1, max_value=300), st.data())
def test_compiled_threshold_quantize_forward_equals_eager_and_gradients_agree(bits, size, data) -> None:
    n = 2**bits - 1
    seed = data.draw(st.integers(min_value=0, max_value=2**16))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, generator=generator) * 2
    upstream = torch.randn(size, generator=generator)
    params = [
        torch.tensor(0.1),
        torch.rand(n, generator=generator) * 0.5 + 0.01,
        torch.tensor(1.3),
        torch.tensor(0.7),
    ]

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves = [x.clone().requires_grad_(), *(p.clone().requires_grad_() for p in params)]
        out = qf.threshold_quantize(*leaves, None, 1e-3)
        return out.detach(), list(torch.autograd.grad((out * upstream).sum(), leaves))

    (eager_out, eager_grads), (compiled_out, compiled_grads) = both_backends(run)
    assert torch.equal(compiled_out, eager_out)
    names = ["x", "start", "intervals", "beta1", "beta2"]
    # The parameter gradients are float32 sums over all `size` elements in another order: their
    # rounding difference grows with the number of terms (seen: 4e-5 on a sum of 286).
    atol = 1e-5 * max(1.0, size / 25)
    for name, a, b in zip(names, compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


@needs_compiler
def test_compiled_interval_sums_keep_channels_last_and_match_the_definition() -> None:
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(0, 16, (4, 3, 5, 5), generator=generator, dtype=torch.int32)
    positions = positions.to(memory_format=torch.channels_last)
    grad = torch.randn(4, 3, 5, 5, generator=generator).to(memory_format=torch.channels_last)
    values = torch.rand(4, 3, 5, 5, generator=generator).to(memory_format=torch.channels_last)
    slope, levels = torch.rand(16, generator=generator), torch.rand(16, generator=generator)
    eager, compiled = both_backends(kernels.interval_sums, positions, grad, values, slope, levels)
    assert compiled[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    p, g, v = positions.long(), grad, values  # the definition, elementwise
    torch.testing.assert_close(eager[0], g * slope[p])
    inside = (p >= 1) & (p <= 14)
    interval = (p - 1).clamp(0, 13) // 2
    per_interval = torch.stack([(g * (inside & (interval == k))).sum() for k in range(7)])
    per_interval_product = torch.stack([(g * v * (inside & (interval == k))).sum() for k in range(7)])
    torch.testing.assert_close(eager[1], per_interval)
    torch.testing.assert_close(eager[2], per_interval_product)
    torch.testing.assert_close(eager[3], (g * levels[p]).sum())


@needs_compiler
def test_training_and_conversion_under_the_compiled_backend_match_eager() -> None:
    x = images(4)
    models = []
    for name in ("eager", "compiled"):
        with adq_fx.kernel_backend(name):
            torch.manual_seed(0)
            prepared = adq_fx.prepare_adq(TinyResNet().eval(), adq_fx.default_qconfig_mapping(3), x)
            train(prepared, x, steps=2, cross_entropy=True)
            with torch.no_grad():
                trained, converted = prepared(x), adq_fx.convert_adq(prepared, backend="reference")(x)
        assert torch.equal(converted, trained), name
        models.append((prepared, trained))
    (eager_model, eager_out), (compiled_model, compiled_out) = models
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-4, atol=1e-4)
    eager_state = eager_model.state_dict().values()
    for (key, a), b in zip(compiled_model.state_dict().items(), eager_state, strict=True):
        if isinstance(a, torch.Tensor) and a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m, key=key: f"{key}: {m}")


def _broken_compile(*_args, **_kwargs):  # type: ignore[no-untyped-def]
    def fail(*_a, **_k):  # type: ignore[no-untyped-def]
        raise OSError("no C++ compiler here")  # what a missing toolchain raises

    return fail


def _buggy_compile(*_args, **_kwargs):  # type: ignore[no-untyped-def]
    def fail(*_a, **_k):  # type: ignore[no-untyped-def]
        raise IndexError("a bug inside the kernel")

    return fail


def test_a_bug_inside_a_compiled_kernel_surfaces_under_auto_instead_of_a_warning(
    backend, monkeypatch
) -> None:
    monkeypatch.setattr(torch, "compile", _buggy_compile)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the error itself comes out
        with pytest.raises(IndexError, match="a bug inside the kernel"):
            kernels.bucketize(torch.randn(kernels.AUTO_MIN_ELEMENTS), torch.linspace(-1, 1, 5))
    assert kernels._auto_failure is None  # and auto keeps compiling afterwards


def test_auto_falls_back_to_eager_with_one_warning_when_compiling_fails(backend, monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", _broken_compile)
    big = torch.randn(kernels.AUTO_MIN_ELEMENTS)
    b = torch.linspace(-1, 1, 5)
    with pytest.warns(RuntimeWarning, match=r"no C\+\+ compiler here.*set_kernel_backend"):
        codes = kernels.bucketize(big, b)
    assert torch.equal(codes, torch.bucketize(big, b))
    assert kernels._auto_failure is not None
    with warnings.catch_warnings():  # the process stays eager: no second compile, no second warning
        warnings.simplefilter("error")
        assert torch.equal(kernels.bucketize(big, b, right=True), torch.bucketize(big, b, right=True))


def test_compiled_backend_raises_when_compiling_fails(backend, monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", _broken_compile)
    kernels.set_kernel_backend("compiled")
    with pytest.raises(RuntimeError, match=r"_count failed.*set_kernel_backend\('eager'\)"):
        kernels.bucketize(torch.randn(3), torch.tensor([0.0]))


def test_auto_compiles_large_cpu_tensors_only(backend, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(kernels, "_run_compiled", lambda kernel, args, dynamic: calls.append(args[0].numel()))
    b = torch.tensor([0.0, 1.0])
    small, large = torch.randn(kernels.AUTO_MIN_ELEMENTS - 1), torch.randn(kernels.AUTO_MIN_ELEMENTS)
    kernels.bucketize(small, b)
    assert calls == []
    codes = kernels.bucketize(large, b)  # the stub returns None, so eager gives the answer
    assert calls == [large.numel()] and torch.equal(codes, torch.bucketize(large, b))
    kernels.set_kernel_backend("eager")
    kernels.bucketize(large, b)
    assert calls == [large.numel()]


def test_long_tables_stay_eager_even_when_compiled_is_forced(backend, monkeypatch) -> None:
    def refuse(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a long table must not reach a compiled kernel")

    monkeypatch.setattr(kernels, "_run_compiled", refuse)
    kernels.set_kernel_backend("compiled")
    values = torch.randn(100)
    long_table = torch.linspace(-2, 2, kernels.MAX_COMPILED_TABLE + 1)  # e.g. 8-bit thresholds: 511
    assert torch.equal(kernels.bucketize(values, long_table), torch.bucketize(values, long_table))
    positions, _ = kernels.threshold_forward(values, long_table, torch.tensor(1.0), torch.zeros(33))
    assert torch.equal(positions, torch.bucketize(values, long_table, right=True, out_int32=True))


def test_the_kernel_backend_block_restores_the_previous_choice_also_on_error(backend) -> None:
    with adq_fx.kernel_backend("eager") as chosen:
        assert chosen == "eager" and adq_fx.get_kernel_backend() == "eager"
        with pytest.raises(KeyError), adq_fx.kernel_backend("compiled"):
            assert adq_fx.get_kernel_backend() == "compiled"
            raise KeyError("inside the block")
        assert adq_fx.get_kernel_backend() == "eager"
    assert adq_fx.get_kernel_backend() == "auto"
    with pytest.raises(ValueError, match=r"must be one of"), adq_fx.kernel_backend("fast"):  # type: ignore[arg-type]
        pass
    assert adq_fx.get_kernel_backend() == "auto"


def test_set_kernel_backend_validates_and_returns_the_previous_choice(backend) -> None:
    kernels.set_kernel_backend("auto")
    assert adq_fx.set_kernel_backend("eager") == "auto"
    assert adq_fx.get_kernel_backend() == "eager"
    with pytest.raises(ValueError, match=r"must be one of .*'auto', 'eager', 'compiled'.*got 'fast'"):
        adq_fx.set_kernel_backend("fast")  # type: ignore[arg-type]
    assert adq_fx.get_kernel_backend() == "eager"


@needs_compiler
def test_compiled_threshold_forward_keeps_channels_last_and_matches_under_bf16_autocast() -> None:
    x = (torch.randn(2, 3, 5, 5) * 2).to(memory_format=torch.channels_last)
    boundaries = qf.interleaved_boundaries(torch.tensor(0.1), torch.full((7,), 0.3), 1e-3)
    table = torch.arange(8, dtype=torch.float32) * 0.25
    eager, compiled = both_backends(kernels.threshold_forward, x, boundaries, torch.tensor(1.3), table)
    assert compiled[0].dtype == torch.uint8 and eager[0].dtype == torch.int32  # 15 boundaries fit a byte
    for a, b in zip(compiled, eager, strict=True):
        assert a.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a.to(b.dtype), b)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the quantizers compare in fp32 under autocast too
        under_autocast = both_backends(kernels.threshold_forward, x, boundaries, torch.tensor(1.3), table)
    for a, b in zip(under_autocast[1], eager, strict=True):
        assert torch.equal(a.to(b.dtype), b)


@needs_compiler
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("layer_units", [False, True])
def test_compiled_codebook_forward_equals_eager(bits, channels_last, layer_units) -> None:
    generator = torch.Generator().manual_seed(bits)
    weight = torch.randn(6, 4, 3, 3, generator=generator) * torch.logspace(-3, 0, 6).view(-1, 1, 1, 1)
    if channels_last:
        weight = weight.to(memory_format=torch.channels_last)
    scale = qf.per_channel_rms(weight)
    codebook = qf.quantile_codebook(qf.normalise(weight, scale), bits)
    upstream = torch.randn(weight.shape, generator=generator)
    weights = qf.layer_commitment_weights(scale) if layer_units else None

    def run() -> tuple[list[torch.Tensor], torch.Tensor]:
        w = weight.clone().requires_grad_()
        quantized, commitment, counts, sums = qf.codebook_quantize(
            w, scale, codebook, with_statistics=True, commitment_weights=weights
        )
        grad = torch.autograd.grad((quantized * upstream).sum() + commitment, w)[0]
        return [quantized.detach(), commitment.detach(), counts, sums], grad

    (eager, eager_grad), (compiled, compiled_grad) = both_backends(run)
    assert torch.equal(compiled[0], eager[0])  # the quantized weight, bit for bit
    assert compiled[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(compiled[2], eager[2])  # counts per entry
    assert compiled[2].sum() == weight.numel()
    torch.testing.assert_close(compiled[1], eager[1])
    torch.testing.assert_close(compiled[3], eager[3])
    torch.testing.assert_close(compiled_grad, eager_grad)
    codes = qf.nearest_codes(qf.normalise(weight, scale), codebook)  # what convert_adq stores
    assert torch.equal(qf.denormalise(codebook[codes.long()], scale), compiled[0])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("with_commitment", "with_statistics"), [(True, True), (False, False), (True, False)]
)
def test_codebook_forward_always_answers_and_its_eager_path_is_the_reference_math(
    channels_last, with_commitment, with_statistics
) -> None:
    """One contract for every kernel: callers get the result whichever path ran (never None)."""
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(5, 3, 3, 3, generator=generator) * 0.2
    if channels_last:
        weight = weight.to(memory_format=torch.channels_last)
    scale = qf.per_channel_rms(weight)
    codebook = qf.quantile_codebook(qf.normalise(weight, scale), 3)
    with adq_fx.kernel_backend("eager"):
        quantized, residual, commitment, statistics = kernels.codebook_forward(
            weight,
            scale,
            codebook,
            qf.codebook_midpoints(codebook),
            with_commitment=with_commitment,
            with_statistics=with_statistics,
        )
    normalised = qf.normalise(weight, scale)
    codes = qf.nearest_codes(normalised, codebook)
    assert torch.equal(quantized, qf.denormalise(codebook[codes.long()], scale))
    assert quantized.is_contiguous(memory_format=torch.channels_last) == channels_last
    if with_commitment:
        assert torch.equal(residual, normalised - codebook[codes.long()])
        torch.testing.assert_close(commitment, (normalised - codebook[codes.long()]).pow(2).mean())
    else:
        assert residual is None and float(commitment) == 0.0
    if with_statistics:
        counts, sums = statistics
        assert torch.equal(counts, torch.bincount(codes.flatten().long(), minlength=7).float())
        assert float(counts.sum()) == weight.numel()
        expected_sums = torch.zeros(7).index_add_(0, codes.flatten().long(), normalised.flatten())
        torch.testing.assert_close(sums, expected_sums)
    else:
        assert statistics is None
