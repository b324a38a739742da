"""Frozen, keyword-only configuration dataclasses.

Every config validates itself on construction so that a bad value fails where
it is written, with the field name and the fix, not deep inside a pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

SUPPORTED_BITS = range(2, 9)  # codes fit one uint8; Alg. 1 is degenerate at 1 bit
ThresholdInit = Literal["auto", "uniform", "first_batch"]  # how learned thresholds start


def _check_bits(owner: str, bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(
            f"{owner}(bits={bits!r}) is not supported: use an integer from "
            f"{SUPPORTED_BITS.start} to {SUPPORTED_BITS.stop - 1}."
        )


def _check_signed(owner: str, signed: object) -> None:
    if signed not in (None, True, False):
        raise ValueError(f"{owner}(signed={signed!r}) must be None, True or False.")


def _check_range(owner: str, name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ValueError(f"{owner}({name}={value!r}) must lie in [{lo}, {hi}].")


@dataclass(frozen=True, kw_only=True)
class CodebookWeightConfig:
    """ADQ weight quantizer: per-channel scale and a learned per-layer codebook.

    levels="full" (default) uses all 2^b codes, at quantiles of the whole
    distribution (no zero level); levels="alg1" builds 2^b - 1 levels with zero
    exactly as Alg. 1 (one code stays unused). All codes trained better from a
    pre-trained start on the validation split, most at 2 bits (docs/design.md,
    "Weights: ADQ codebooks"). pin_zero keeps a zero entry exactly 0; None (default)
    means "where the codebook has one", i.e. with levels="alg1". init="quantile" is Alg. 1; init="normal"
    draws sorted N(0, 1) samples (the paper's ablation B). learn_codebook=False
    freezes the codebook (ablation C). int8_grid=True keeps every codebook entry
    on multiples of 1/32 (in units of the channel's RMS, up to ±127/32) while it
    trains, so ``convert_adq(backend="int8")`` reproduces the trained weights
    exactly instead of snapping them (docs/design.md, "Integer inference").
    kmeans_init_steps runs that many k-means steps on the pre-trained weights
    from the quantile init before training (functional.lloyd_codebook; the
    random init="normal" of ablation B is left as drawn): the quantiles
    alone clip a quarter of the weights (3 bits) and halve a pre-trained
    ResNet-20's accuracy before QAT starts; 0 is Alg. 1 as written.
    warm_start (default) starts the EMA statistics as if the init codebook had been
    seen once with equal occupancy, so the first steps move it smoothly; False
    starts them at zero (VQ-VAE's EMA; the paper leaves it open), so the first
    training step moves every entry to its cluster's mean.
    commitment_units="layer" (default) measures the commitment loss in units of
    the layer's RMS (functional.layer_commitment_weights), which keeps SGD stable
    on channels whose RMS is far below their layer's; "channel" is eq. (3) as
    written, on the weights normalised by each channel's RMS. Layer units trained
    better on the validation split, most at 2 bits (docs/design.md, "Commitment units").
    """

    method: ClassVar[str] = "adq"
    # What a saved quantization map that lacks a field ran with (the field came later, with a new
    # default): qconfig_mapping_from_map fills these in, so an old checkpoint trains on as it did.
    values_before_field: ClassVar[dict[str, Any]] = {"commitment_units": "channel"}

    bits: int = 3
    levels: Literal["alg1", "full"] = "full"
    init: Literal["quantile", "normal"] = "quantile"
    learn_codebook: bool = True
    ema_decay: float = 0.99
    eps: float = 1e-5
    commitment_beta: float = 0.25
    commitment_units: Literal["channel", "layer"] = "layer"
    pin_zero: bool | None = None
    seed: int = 0
    int8_grid: bool = False
    kmeans_init_steps: int = 20
    warm_start: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.pin_zero is None:  # resolved here, so a saved config states what ran
            object.__setattr__(self, "pin_zero", self.levels == "alg1")
        _check_bits(name, self.bits)
        if (
            isinstance(self.kmeans_init_steps, bool)
            or not isinstance(self.kmeans_init_steps, int)
            or self.kmeans_init_steps < 0
        ):
            raise ValueError(f"{name}(kmeans_init_steps={self.kmeans_init_steps!r}) must be an integer >= 0.")
        for flag in ("int8_grid", "warm_start"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{name}({flag}={getattr(self, flag)!r}) must be True or False.")
        if self.levels not in ("alg1", "full"):
            raise ValueError(f"{name}(levels={self.levels!r}) must be 'alg1' or 'full'.")
        if self.init not in ("quantile", "normal"):
            raise ValueError(f"{name}(init={self.init!r}) must be 'quantile' or 'normal'.")
        if self.commitment_units not in ("channel", "layer"):
            units = self.commitment_units
            raise ValueError(f"{name}(commitment_units={units!r}) must be 'channel' or 'layer'.")
        _check_range(name, "ema_decay", self.ema_decay, 0.0, 1.0)
        if not self.eps > 0:
            raise ValueError(f"{name}(eps={self.eps!r}) must be positive.")
        if not self.commitment_beta >= 0:
            raise ValueError(f"{name}(commitment_beta={self.commitment_beta!r}) must be >= 0.")
        if self.pin_zero and self.levels == "full":
            raise ValueError(
                f"{name}(levels='full', pin_zero=True): the full 2^b-level codebook has no "
                "zero level to pin; pass pin_zero=False or levels='alg1'."
            )

    @property
    def num_levels(self) -> int:
        return 2**self.bits - 1 if self.levels == "alg1" else 2**self.bits


@dataclass(frozen=True, kw_only=True)
class ThresholdActivationConfig:
    """N2UQ activation quantizer: learned thresholds, uniform output levels.

    signed=None detects at prepare time whether the input can be negative
    (graph first, then the example inputs); True/False overrides it. A signed
    input gets a learnable per-channel shift in front (and removed behind).
    init="auto" (default) keeps N2UQ's fixed start, a uniform quantizer on
    [0, 2] (on [-1, 1] for a signed input), wherever the first batch agrees with
    it: the 99th percentile of |x| within a factor AUTO_START_TOLERANCE of the
    range. Elsewhere (no BatchNorm in front, activations of 0.01 or of 100) it
    stretches the same quantizer over [0, q99] ([-q99, q99] signed), so no layer
    starts with all its inputs in one code. init="uniform" is the fixed start
    always; init="first_batch" always scales to the first batch by LSQ's rule,
    range 2·mean|x|·sqrt(2^b - 1), as LSQ and ASQ activations start. From the
    pre-trained ResNet-20 the fixed start trained 2.6 pt better on validation
    than LSQ's rule (benchmarks/ablation.py --schedule pretrained, D-fbinit):
    LSQ's range sits below the 99th percentile of sparse ReLU outputs.
    grad_scale=True scales the threshold parameters' gradients by LSQ's
    1/sqrt(n · features per sample). Off by default: from a pre-trained start
    their unscaled gradients are already about a weight's relative size
    (benchmarks/update_scale.py), and the scaled ones 200x smaller.
    max_relative_gradient caps the joint gradient of the threshold parameters
    at that multiple of their norm (a trust ratio): typical steps pass
    untouched, and no optimizer step can throw the thresholds off the data.
    """

    method: ClassVar[str] = "n2uq"
    AUTO_START_TOLERANCE: ClassVar[float] = 4.0

    bits: int = 3
    signed: bool | None = None
    min_interval: float = 1e-3
    init: ThresholdInit = "auto"
    grad_scale: bool = False
    max_relative_gradient: float | None = 1.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_bits(name, self.bits)
        _check_signed(name, self.signed)
        if self.init not in get_args(ThresholdInit):
            allowed = ", ".join(get_args(ThresholdInit))
            raise ValueError(f"{name}(init={self.init!r}) must be one of {allowed}.")
        if not self.min_interval > 0:
            raise ValueError(f"{name}(min_interval={self.min_interval!r}) must be positive.")
        if self.max_relative_gradient is not None and not self.max_relative_gradient > 0:
            raise ValueError(
                f"{name}(max_relative_gradient={self.max_relative_gradient!r}) must be "
                "positive, or None for no cap."
            )

    @property
    def num_levels(self) -> int:
        return 2**self.bits


@dataclass(frozen=True, kw_only=True)
class UniformWeightConfig:
    """N2UQ's weights (the paper's baseline A): 2^b uniform mid-rise levels, no zero.

    Scale per output channel gamma_b * mean|W_c| with gamma_b = (2^b - 1) / 2^(b-1),
    recomputed from the weights each step and not learned; plain STE.
    """

    method: ClassVar[str] = "n2uq"

    bits: int = 3

    def __post_init__(self) -> None:
        _check_bits(type(self).__name__, self.bits)


@dataclass(frozen=True, kw_only=True)
class LSQWeightConfig:
    """LSQ weights (Esser et al. 2020): signed integer levels times a learned per-channel step.

    ``grad_scale`` applies LSQ's step-gradient scale 1 / sqrt(Q_P * weights per channel).
    """

    method: ClassVar[str] = "lsq"

    bits: int = 3
    grad_scale: bool = True

    def __post_init__(self) -> None:
        _check_bits(type(self).__name__, self.bits)


@dataclass(frozen=True, kw_only=True)
class LSQActivationConfig:
    """LSQ activations: one learned step per tensor, initialised from the first batch seen.

    Unsigned inputs use codes 0..2^b-1, signed ones -2^(b-1)..2^(b-1)-1; signed=None
    detects it at prepare time as for the threshold quantizer.
    """

    method: ClassVar[str] = "lsq"

    bits: int = 3
    signed: bool | None = None
    grad_scale: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_bits(name, self.bits)
        _check_signed(name, self.signed)


@dataclass(frozen=True, kw_only=True)
class ASQActivationConfig:
    """ASQ activations: an LSQ step times a per-sample factor beta from a small adapter.

    The adapter (global average pool -> Linear(C, C/reduction) -> ReLU ->
    Linear(., 1) -> ReLU, one Linear when C < 2·reduction) starts at beta ≈ 1;
    the step starts at 2·mean|x|/sqrt(Q_P) on the first batch. The step gradient
    is scaled as LSQ's, the adapter's is not.
    """

    method: ClassVar[str] = "asq"

    bits: int = 3
    signed: bool | None = None
    grad_scale: bool = True
    reduction: int = 4

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_bits(name, self.bits)
        _check_signed(name, self.signed)
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"{name}(reduction={self.reduction!r}) must be a positive integer.")


@dataclass(frozen=True, kw_only=True)
class POSTWeightConfig:
    """POST weights (ASQ paper): levels {0} ∪ {±base^-k}, k = 0..2^(b-1)-2, times a learned
    per-channel clip α.

    That is 2^b - 1 levels, so a b-bit code holds them (the released code's
    2^b + 1 levels would not fit). ``base`` defaults to √2; 2.0 gives power-of-two
    levels. α starts at the ``clip_quantile`` quantile of |W_c|.
    """

    method: ClassVar[str] = "post"

    bits: int = 3
    base: float = 2**0.5
    clip_quantile: float = 0.99

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_bits(name, self.bits)
        if not self.base > 1:
            raise ValueError(f"{name}(base={self.base!r}) must be greater than 1.")
        _check_range(name, "clip_quantile", self.clip_quantile, 0.5, 1.0)


WeightConfig = CodebookWeightConfig | UniformWeightConfig | LSQWeightConfig | POSTWeightConfig
ActivationConfig = ThresholdActivationConfig | LSQActivationConfig | ASQActivationConfig


@dataclass(frozen=True, kw_only=True)
class ADQConfig:
    """What one quantized layer gets: a weight and an input-activation quantizer.

    ADQ is CodebookWeightConfig + ThresholdActivationConfig (the default); the
    baselines swap either side: UniformWeightConfig (N2UQ), LSQ*Config (LSQ).
    """

    weight: WeightConfig = field(default_factory=CodebookWeightConfig)
    activation: ActivationConfig = field(default_factory=ThresholdActivationConfig)

    def __post_init__(self) -> None:
        from . import quantizers  # noqa: F401  (registers the built-in quantizers)
        from .registry import config_types

        for role in ("weight", "activation"):
            allowed = config_types(role)
            value = getattr(self, role)
            if type(value) not in allowed:
                raise TypeError(
                    f"ADQConfig({role}=...) must be one of "
                    f"{', '.join(c.__name__ for c in allowed)}; got {type(value).__name__}. "
                    "A quantizer of your own is registered with adq_fx.registry.register_quantizer."
                )

    @classmethod
    def with_bits(cls, weight_bits: int, activation_bits: int | None = None) -> ADQConfig:
        """Default ADQ settings at the given bit-widths (activation defaults to weight)."""
        a_bits = weight_bits if activation_bits is None else activation_bits
        return cls(
            weight=CodebookWeightConfig(bits=weight_bits),
            activation=ThresholdActivationConfig(bits=a_bits),
        )


# Names before the <Method><Role>Config pattern; kept importable, with a warning, for old code.
RENAMED = {
    "WeightCodebookConfig": "CodebookWeightConfig",
    "ActivationThresholdConfig": "ThresholdActivationConfig",
}


def renamed(module: str, name: str, namespace: dict[str, Any]) -> Any:
    """A module ``__getattr__`` body: an old config name warns once per use and gives the new class."""
    if name not in RENAMED:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(
        f"{module}.{name} is now {RENAMED[name]}; the old name will be removed in a later release.",
        DeprecationWarning,
        stacklevel=3,
    )
    return namespace[RENAMED[name]]


def __getattr__(name: str) -> Any:
    return renamed(__name__, name, globals())
