"""Fused CPU kernels for the quantizers' hot loops, with eager fallbacks that give the same values.

Every training step searches each weight (nearest codebook entry) and each
activation (thresholds) among a handful of sorted boundaries, then maps codes
to levels and, in backward, sums the gradient per search position. In eager
PyTorch that is a branchy binary search (``torch.bucketize``, about 8 ns an
element on a CPU core), several elementwise passes and a single-threaded
``index_add_``. Written as "count the boundaries below each value" these steps
are elementwise, and torch.compile fuses each group into one vectorised,
multi-threaded pass (``benchmarks/qat_speed.py`` measures the difference).

Forward values are identical on both paths (codes, NaN and ±inf included, and
levels taken from the same table), so a backend never changes what a model
computes or what ``convert_adq`` exports. Gradient sums differ only in float
summation order.

Backends (:func:`set_kernel_backend`):

- ``"auto"`` (default): compiled for CPU tensors of at least
  :data:`AUTO_MIN_ELEMENTS` elements, eager otherwise. Compiling costs a few
  seconds per kernel variant the first time on a machine (torch.compile caches
  them on disk); small models (the demo, the tests) stay eager and never pay it.
  The choice depends only on each tensor's device and size, never on what the
  process did before, so a resumed run computes exactly what an uninterrupted
  one does. If compiling fails (no C++ compiler, an unsupported platform), one
  warning says why and the process stays eager. GPUs stay eager: the compiled
  path is not measured there yet.
- ``"eager"``: always eager.
- ``"compiled"``: always compiled, any device and size; a failure raises.

Either way, tables of more than :data:`MAX_COMPILED_TABLE` boundaries (6 bits and
up) stay eager: counting compares each element with every boundary, which beats a
binary search only for the short tables of 2-5 bits.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ._layout import flatten_alike, gather

KernelBackend = Literal["auto", "eager", "compiled"]
KERNEL_BACKENDS: tuple[str, ...] = get_args(KernelBackend)

#: "auto" compiles for tensors this large: a ResNet's activations at training batch
#: sizes, not a toy model's (where compiling would cost more than it saves).
AUTO_MIN_ELEMENTS = 1 << 18
#: The inference encoder (:func:`threshold_codes`) has no backward and runs once per layer per
#: forward, so compiling pays from smaller tensors (see benchmarks/inference_speed.py).
AUTO_MIN_ENCODE_ELEMENTS = 1 << 14
#: The compiled kernels' search picks each level's boundary through a tree of selects (2^d - 1
#: selects for 2^d - 1 boundaries): worth it for the 2-5 bit tables this library is for (at
#: most 63 boundaries), not for 8-bit ones (511).
MAX_COMPILED_TABLE = 64
#: Boundaries are padded with NaN (which no comparison counts, so it sorts as +inf) to a length
#: 2^d - 1: a complete binary search tree, d compares per value, and a network compiles a few
#: kernel variants (the 2^b - 1 thresholds or midpoints of a b-bit table need no padding).

#: Compiled variants allowed per kernel (boundary sizes x dtypes x layouts of small inputs).
_RECOMPILE_LIMIT = 64
# torch renamed cache_size_limit to recompile_limit; take whichever this version has.
_RECOMPILE_LIMIT_NAME = (
    "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
)

# What a call past the recompile limit raises under fullgraph (renamed between torch versions).
_RECOMPILE_LIMIT_ERRORS = tuple(
    getattr(torch._dynamo.exc, name)
    for name in ("FailOnRecompileLimitHit", "FailOnCacheLimitHit")
    if hasattr(torch._dynamo.exc, name)
)

_backend: KernelBackend = "auto"
_auto_failure: str | None = None  # why "auto" gave up compiling, once it has
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


def set_kernel_backend(backend: KernelBackend) -> KernelBackend:
    """Choose eager or compiled quantizer kernels (see the module docstring); returns the previous choice."""
    global _backend
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"kernel backend must be one of {KERNEL_BACKENDS}, got {backend!r}")
    previous, _backend = _backend, backend
    return previous


def get_kernel_backend() -> KernelBackend:
    return _backend


@contextlib.contextmanager
def kernel_backend(backend: KernelBackend) -> Iterator[KernelBackend]:
    """``with adq_fx.kernel_backend("eager"):`` runs the block on that backend, then restores the previous.

    The choice is process-global (one switch for every quantizer); the block form
    keeps it from leaking out of a training run or a test, exceptions included.
    """
    previous = set_kernel_backend(backend)
    try:
        yield backend
    finally:
        set_kernel_backend(previous)


# ------------------------------------------------------------------------ public ops
def bucketize(values: Tensor, boundaries: Tensor, *, right: bool = False, out_int32: bool = False) -> Tensor:
    """``torch.bucketize(values, boundaries, right=right, out_int32=out_int32)`` for a sorted
    1-D ``boundaries``, no gradient; the result keeps the layout of ``values``."""
    values, boundaries = values.detach(), boundaries.detach().contiguous()
    (flat,), unflatten = flatten_alike(values)  # elementwise: search in memory order, keep the layout
    if _use_compiled(values, boundaries.numel()):
        codes = _run_compiled(_count, (flat, _pad(boundaries), right), dynamic=(flat,))
        if codes is not None:
            return unflatten(codes if out_int32 else codes.long())
    return unflatten(torch.bucketize(flat.contiguous(), boundaries, right=right, out_int32=out_int32))


def pad_table(boundaries: Tensor) -> Tensor:
    """``boundaries`` padded with NaN (which no comparison counts) to the length compiled kernels take."""
    return _pad(boundaries.detach().contiguous())


def threshold_codes(values: Tensor, thresholds: Tensor, padded: Tensor | None = None) -> Tensor:
    """uint8 codes ``#{t in thresholds : t <= v}`` (bucketize with right=True) for a sorted 1-D
    ``thresholds`` of at most 255 entries, in the layout of ``values``: the inference encoder.
    ``padded`` is ``pad_table(thresholds)``, for a caller that calls often with one table."""
    values, thresholds = values.detach(), thresholds.detach()
    (flat,), unflatten = flatten_alike(values)
    if torch.compiler.is_compiling() and thresholds.numel() <= MAX_COMPILED_TABLE:
        # Inside a user's torch.compile of a converted model: the count joins the graph, where
        # inductor fuses it with the add or ReLU before it (a binary search would not vectorise).
        return unflatten(_count_uint8(flat, pad_table(thresholds) if padded is None else padded))
    if _use_compiled(values, thresholds.numel(), min_elements=AUTO_MIN_ENCODE_ELEMENTS):
        padded = pad_table(thresholds) if padded is None else padded
        codes = _run_compiled(_count_uint8, (flat, padded), dynamic=(flat,), direct=True)
        if codes is not None:
            return unflatten(codes)
    codes = torch.bucketize(flat.contiguous(), thresholds, right=True, out_int32=True)
    return unflatten(codes.to(torch.uint8))


def threshold_forward(
    x: Tensor, boundaries: Tensor, beta1: Tensor, code_table: Tensor
) -> tuple[Tensor, Tensor]:
    """Search positions of ``beta1 * x`` among ``boundaries`` (bucketize, right=True), and the
    output ``code_table[position >> 1]``, in x's layout.

    The compiled kernel stores positions as uint8 when they fit (up to 7 bits), a quarter of
    the memory traffic and of the memory saved for backward; the eager path as int32.
    """
    x, boundaries = x.detach(), boundaries.detach().contiguous()
    beta1, code_table = beta1.detach(), code_table.detach()
    if _use_compiled(x, boundaries.numel()):
        (flat,), unflatten = flatten_alike(x)
        small = boundaries.numel() <= torch.iinfo(torch.uint8).max  # positions 0..numel
        args = (flat, _pad(boundaries), beta1, code_table, torch.uint8 if small else torch.int32)
        result = _run_compiled(_fused_threshold_forward, args, dynamic=(flat,))
        if result is not None:
            return unflatten(result[0]), unflatten(result[1])
    positions = bucketize(beta1 * x, boundaries, right=True, out_int32=True)
    return positions, gather(code_table, positions >> 1)


def interval_sums(
    positions: Tensor, grad: Tensor, values: Tensor, slope_table: Tensor, level_table: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For the threshold quantizer's backward, from one pass over the activation:
    ``grad * slope_table[positions]`` (in grad's shape); per interval k (search positions
    2k+1 and 2k+2), Σ grad and Σ grad·values; and Σ grad·level_table[positions]."""
    num_intervals = (slope_table.numel() - 2) // 2
    flats, unflatten = flatten_alike(positions.detach(), grad.detach(), values.detach())
    if _use_compiled(grad, num_intervals):
        args = (*flats, slope_table, level_table, num_intervals)
        result = _run_compiled(_fused_interval_sums, args, dynamic=flats)
        if result is not None:
            return unflatten(result[0]), result[1], result[2], result[3]
    flat_positions, flat_grad, flat_values = flats
    flat_positions = flat_positions.int()  # index_add_ takes int32/int64 (compiled forwards store uint8)
    num_positions = slope_table.numel()
    grad_sums = flat_grad.new_zeros(num_positions).index_add_(0, flat_positions, flat_grad)
    product_sums = flat_grad.new_zeros(num_positions).index_add_(0, flat_positions, flat_grad * flat_values)
    scaled = flat_grad * slope_table.index_select(0, flat_positions)
    return (
        unflatten(scaled),
        grad_sums[1:-1].view(num_intervals, 2).sum(1),
        product_sums[1:-1].view(num_intervals, 2).sum(1),
        (grad_sums * level_table).sum(),
    )


def cluster_statistics(weight_normalised: Tensor, codes: Tensor, num_levels: int) -> tuple[Tensor, Tensor]:
    """Per entry: how many weights chose it and the sum of those weights (eqs. 5-6 increments)."""
    (flat_codes, flat_weights), _ = flatten_alike(codes, weight_normalised.detach().float())
    counts = code_counts(flat_codes, num_levels, without_host_sync=flat_codes.is_cuda)
    sums = flat_weights.new_zeros(num_levels).index_add_(0, flat_codes, flat_weights)
    return counts, sums


def code_counts(flat_codes: Tensor, num_levels: int, *, without_host_sync: bool) -> Tensor:
    """How often each code occurs, float32.

    torch.bincount reads the largest code back to the host on CUDA (a sync per
    layer per step), so there the counts are accumulated with index_add_ in
    float64 (exact to 2^53); on CPU bincount is the faster of the two.
    """
    if not without_host_sync:
        return torch.bincount(flat_codes, minlength=num_levels).to(torch.float32)
    ones = torch.ones((), dtype=torch.float64, device=flat_codes.device).expand(flat_codes.numel())
    counts = torch.zeros(num_levels, dtype=torch.float64, device=flat_codes.device)
    return counts.index_add_(0, flat_codes, ones).to(torch.float32)


def codebook_forward(
    weight: Tensor,
    scale: Tensor,
    codebook: Tensor,
    midpoints: Tensor,
    *,
    with_commitment: bool,
    with_statistics: bool,
    commitment_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, tuple[Tensor, Tensor] | None]:
    """The ADQ weight forward: one fused pass where it compiles, the same ops eagerly otherwise.

    Returns ``scale * codebook[code]`` of ``weight / scale`` (weight's shape and layout), the
    residual ``w/s - codebook[code]`` (None without ``with_commitment``), the commitment
    mean of its square, each output channel's square times its ``commitment_weights``
    entry where given (0 without ``with_commitment``), and per codebook entry the count and the sum of the
    normalised weights that chose it (None without ``with_statistics``). ``midpoints`` are
    the codebook's decision boundaries (``functional.codebook_midpoints``). No gradient.
    """
    weight, scale, codebook = weight.detach(), scale.detach(), codebook.detach()
    midpoints = midpoints.detach().contiguous()
    weights = None if commitment_weights is None else commitment_weights.detach()
    (flat,), unflatten = flatten_alike(weight)
    rows = flat.view(weight.shape[0], -1)  # one row per output channel (outermost in both layouts)
    result = None
    if _use_compiled(weight, midpoints.numel()):
        args = (rows, scale, _pad(midpoints), codebook, with_commitment, with_statistics, weights)
        dynamic = (rows, scale) if weights is None else (rows, scale, weights)
        result = _run_compiled(_fused_codebook_forward, args, dynamic=dynamic)
    residual: Tensor | None
    if result is not None:
        quantized, residual, commitment, counts, sums = result
        statistics = (counts, sums) if with_statistics else None
    else:
        normalised = rows / scale[:, None]
        codes = bucketize(normalised, midpoints, out_int32=True)
        target = gather(codebook, codes)
        quantized = scale[:, None] * target
        residual = normalised - target if with_commitment else None
        commitment = _commitment(residual, weights) if residual is not None else weight.new_zeros(())
        statistics = cluster_statistics(normalised, codes, codebook.numel()) if with_statistics else None
    return (
        unflatten(quantized.reshape(-1)),
        unflatten(residual.reshape(-1)) if with_commitment and residual is not None else None,
        commitment if with_commitment else weight.new_zeros(()),
        statistics,
    )


# ------------------------------------------------------------------------ dispatch
def _use_compiled(t: Tensor, table_size: int, *, min_elements: int = AUTO_MIN_ELEMENTS) -> bool:
    """Whether ``t`` goes through a compiled kernel, given the boundaries (or intervals) per element;
    ``min_elements`` is where "auto" starts compiling."""
    if table_size > MAX_COMPILED_TABLE:
        return False  # a count over hundreds of boundaries loses to bucketize's binary search
    if _backend == "eager" or torch.compiler.is_compiling():
        return False  # inside a user's torch.compile, the eager ops join the user's graph
    if _backend == "compiled":
        return True
    return _auto_failure is None and t.device.type == "cpu" and t.numel() >= min_elements


def _compile_failures() -> tuple[type[BaseException], ...]:
    """What a failing toolchain raises (no C++ compiler, a backend crash): the only errors "auto" absorbs.

    Anything else raised from a compiled kernel is a bug in the kernel or its
    arguments and surfaces as it is, in every backend.
    """
    failures: list[type[BaseException]] = [OSError, subprocess.CalledProcessError, ImportError]
    for module_name, name in (
        ("torch._dynamo.exc", "BackendCompilerFailed"),
        ("torch._inductor.exc", "InductorError"),
        ("torch._inductor.exc", "CppCompileError"),
        ("torch._inductor.exc", "InvalidCxxCompiler"),
    ):
        try:
            failure = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            failure = None
        if isinstance(failure, type) and issubclass(failure, BaseException):
            failures.append(failure)
    return tuple(failures)


COMPILE_FAILURES = _compile_failures()


def _run_compiled(
    kernel: Callable[..., Any], args: tuple[Any, ...], *, dynamic: Sequence[Tensor], direct: bool = False
) -> Any:
    """The compiled kernel's result, or None after a failed compile under "auto" (warned once).

    Each kernel compiles once per boundary-table size and dtype (a few per network);
    the raised recompile limit only covers these calls, so a mixed-precision network
    never silently drops back to Python. ``direct`` calls a kernel compiled with dynamic
    shapes from the start without the profiler range, no-grad and config contexts: each
    costs tens of µs, which the inference encoder at batch 1 cannot afford.
    """
    global _auto_failure
    if kernel not in _compiled:
        _compiled[kernel] = torch.compile(kernel, fullgraph=True, dynamic=True if direct else None)
    if not direct:
        for t in dynamic:
            for dim in range(t.dim()):
                torch._dynamo.maybe_mark_dynamic(t, dim)  # one kernel for every tensor size
    try:
        if direct:
            try:
                return _compiled[kernel](*args)
            except _RECOMPILE_LIMIT_ERRORS:
                pass  # a variant past dynamo's default limit: compile it below, under the raised limit
        with (
            torch.profiler.record_function(f"adq_fx.kernels.{kernel.__name__}"),  # its time, by name
            torch.no_grad(),
            torch._dynamo.config.patch(_RECOMPILE_LIMIT_NAME, _RECOMPILE_LIMIT),
        ):
            return _compiled[kernel](*args)
    except COMPILE_FAILURES as error:  # the toolchain failed, not the kernel: use the eager path
        if _backend == "compiled":
            raise RuntimeError(
                f"adq_fx kernel backend 'compiled': torch.compile of {kernel.__name__} failed "
                f"({type(error).__name__}: {error}); use adq_fx.set_kernel_backend('eager')"
            ) from error
        _auto_failure = f"{type(error).__name__}: {error}"
        warnings.warn(
            "adq_fx: compiling the quantizer kernels failed, so this process runs them eagerly "
            f"(same values, slower on CPU). Cause: {_auto_failure}. "
            "adq_fx.set_kernel_backend('eager') silences this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _pad(boundaries: Tensor) -> Tensor:
    length = (1 << max(boundaries.numel(), 1).bit_length()) - 1  # the smallest 2^d - 1 >= numel
    padding = length - boundaries.numel()
    if not padding:
        return boundaries
    return torch.cat([boundaries, boundaries.new_full((padding,), float("nan"))])


# ------------------------------------------------------- kernels (compiled as written)
def _select(masks: list[Tensor], values: list[Tensor]) -> Tensor:
    """Per element, ``values[k]`` where k's bits (most significant first) are ``masks``."""
    if not masks:
        return values[0]
    half = len(values) // 2
    return torch.where(masks[0], _select(masks[1:], values[half:]), _select(masks[1:], values[:half]))


def _search(flat: Tensor, padded: Tensor, right: bool) -> Tensor:
    """#{b : b < v} (right=False) or #{b : b <= v} (right=True) as float32, for a sorted table.

    A branch-free binary search when ``padded`` has 2^d - 1 entries (as :func:`_pad` makes
    it): level l compares against the middle of the subtree the first l answers chose, picked
    by ``where``, so d compares instead of 2^d - 1 (``benchmarks/int8_kernels.py`` times both
    as the encoder). Counts in float32 (exact below 2^24), which inductor's CPU code
    vectorises better than int32.
    """
    above = torch.ge if right else torch.gt
    depth = padded.numel().bit_length()
    if (1 << depth) - 1 != padded.numel():  # not a complete tree: count every compare
        count = above(flat, padded[0]).to(torch.float32)
        for i in range(1, padded.numel()):  # a static loop: unrolled into one elementwise pass
            count = count + above(flat, padded[i]).to(torch.float32)
        return count
    masks: list[Tensor] = []
    for level in range(depth):
        span = (padded.numel() + 1) >> level  # each candidate subtree's size, plus one
        middles = [padded[k * span + span // 2 - 1] for k in range(1 << level)]
        masks.append(above(flat, _select(masks, middles)))
    count = masks[0].to(torch.float32) * float(1 << (depth - 1))
    for level in range(1, depth):
        count = count + masks[level].to(torch.float32) * float(1 << (depth - 1 - level))
    return count


def _count_as(flat: Tensor, padded: Tensor, right: bool, dtype: torch.dtype) -> Tensor:
    """:func:`_search` as ``dtype``. NaN boundaries never count; a NaN value gets the number of
    real boundaries, as torch.bucketize gives it."""
    real = (padded == padded).sum().to(torch.float32)
    return torch.where(flat != flat, real, _search(flat, padded, right)).to(dtype)


def _count(flat: Tensor, padded: Tensor, right: bool) -> Tensor:
    """:func:`_count_as` int32: torch.bucketize with ``out_int32=True``."""
    return _count_as(flat, padded, right, torch.int32)


def _count_uint8(flat: Tensor, padded: Tensor) -> Tensor:
    """:func:`_count_as` with right=True as uint8 (exact: counts <= 255), the inference encoder."""
    return _count_as(flat, padded, True, torch.uint8)


def _fused_threshold_forward(
    flat: Tensor, padded: Tensor, beta1: Tensor, code_table: Tensor, position_dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    positions = _count(beta1 * flat, padded, True)
    return positions.to(position_dtype), code_table[positions >> 1]


def _commitment(residual: Tensor, channel_weights: Tensor | None) -> Tensor:
    """mean(residual^2) over (channels, rest) rows, each channel's squares weighted where given."""
    squares = residual.pow(2)
    return squares.mean() if channel_weights is None else (squares * channel_weights[:, None]).mean()


def _fused_codebook_forward(
    rows: Tensor,
    scale: Tensor,
    padded_midpoints: Tensor,
    codebook: Tensor,
    with_commitment: bool,
    with_statistics: bool,
    commitment_weights: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    normalised = rows / scale[:, None]
    codes = _count(normalised, padded_midpoints, False)
    target = codebook[codes]
    quantized = scale[:, None] * target
    residual = normalised - target if with_commitment else None
    commitment = _commitment(residual, commitment_weights) if residual is not None else None
    counts = sums = None
    if with_statistics:
        levels = range(codebook.numel())
        counts = torch.stack([(codes == k).sum(dtype=torch.float32) for k in levels])
        sums = torch.stack([torch.where(codes == k, normalised, 0).sum() for k in levels])
    return quantized, residual, commitment, counts, sums


def _fused_interval_sums(
    positions: Tensor,
    grad: Tensor,
    values: Tensor,
    slope_table: Tensor,
    level_table: Tensor,
    num_intervals: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    positions = positions.int()  # uint8 from the compiled forward; as an index uint8 would mean a mask
    product = grad * values
    interval = (positions - 1) >> 1  # -1 below d_0, num_intervals above d_n: matched by no k
    grad_sums = torch.stack([torch.where(interval == k, grad, 0).sum() for k in range(num_intervals)])
    product_sums = torch.stack([torch.where(interval == k, product, 0).sum() for k in range(num_intervals)])
    return grad * slope_table[positions], grad_sums, product_sums, (grad * level_table[positions]).sum()


__all__ = [
    "AUTO_MIN_ELEMENTS",
    "AUTO_MIN_ENCODE_ELEMENTS",
    "KERNEL_BACKENDS",
    "MAX_COMPILED_TABLE",
    "KernelBackend",
    "bucketize",
    "codebook_forward",
    "get_kernel_backend",
    "interval_sums",
    "pad_table",
    "set_kernel_backend",
    "threshold_codes",
    "threshold_forward",
]
