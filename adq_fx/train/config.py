"""TrainConfig: every setting of the recipe, frozen and validated, turned into CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, get_args

from .. import quantizers  # noqa: F401  (registers the built-in quantizers)
from ..config import SUPPORTED_BITS, ThresholdInit
from ..kernels import KERNEL_BACKENDS, KernelBackend
from ..registry import names


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The whole recipe. Defaults run the embedded digits set in about a minute on 2 CPU cores.

    Optimiser and schedule follow the ADQ paper (§4.1): SGD with cosine decay
    to zero; quantizer parameters in their own group at ``quantizer_lr_scale``
    times the learning rate, without weight decay (as N2UQ).
    """

    dataset: str = "digits"
    model: str = "digits_cnn"
    out_dir: str = "runs/digits"
    seed: int = 0
    # the float start: trained here (float_epochs at float_lr), or a checkpoint (any state_dict file;
    # wrapper prefixes such as "module." are stripped, OLD=NEW renames map the rest), optionally
    # fine-tuned for finetune_epochs at finetune_lr; float_cache keeps the result for every run that
    # asks for the same start. The float phase uses float_seed, so QAT seeds share one float model.
    float_checkpoint: str | None = None
    float_checkpoint_rename: tuple[str, ...] = ()
    float_epochs: int = 20
    float_lr: float = 0.05
    finetune_epochs: int = 0
    finetune_lr: float = 0.02
    float_cache: str | None = None
    float_seed: int = 0
    # what to quantize and how: ADQ (adq + n2uq), N2UQ (n2uq + n2uq), LSQ (lsq + lsq), POST weights
    # any registered name (adq_fx.registry): the CLI offers them as choices
    weight_quantizer: str = field(default="adq", metadata={"choices": lambda: names("weight")})
    activation_quantizer: str = field(default="n2uq", metadata={"choices": lambda: names("activation")})
    # n2uq activations: N2UQ's fixed [0, 2] start where the data fits it, else the data's range
    # ("auto"); always fixed ("uniform"); always LSQ's data rule ("first_batch"). ThresholdActivationConfig
    threshold_init: ThresholdInit = "auto"
    target_bits: float = 3.0
    bit_options: tuple[int, ...] = (2, 3, 4)
    mixed_precision: bool = False
    sensitivity_batches: int = 8
    quantize_first_last: bool = False
    codebook_levels: Literal["alg1", "full"] = "alg1"
    codebook_init: Literal["quantile", "normal"] = "quantile"
    codebook_kmeans_steps: int = 20  # k-means steps on the float weights after the init; 0: Alg. 1
    threshold_grad_scale: bool = False  # LSQ's gradient scale on the threshold parameters
    learn_codebook: bool = True
    commitment_beta: float = 0.25
    int8_grid: bool = False  # keep ADQ codebooks on the int8 grid (CodebookWeightConfig.int8_grid)
    # quantization-aware training
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    quantizer_lr_scale: float = 0.1
    batch_size: int = 128
    kd: bool = False
    kd_temperature: float = 1.0
    kd_hard_weight: float = 0.0
    # data and machine
    validation: int = 0  # hold out the last N training images (N / classes per class): choices are made there
    train_subset: int | None = None
    test_subset: int | None = None
    data_seed: int | None = None  # which subset images; None: the run's seed (fixed: paired comparisons)
    image_size: int = 32
    download: bool = False
    device: str = "auto"
    bf16: bool | None = None  # None: on when training on CUDA
    channels_last: bool | None = None  # None: on when training on CUDA
    compile: bool = False
    kernels: KernelBackend = "auto"  # adq_fx.set_kernel_backend for the run
    resume: bool = False
    stop_after_epochs: int | None = None  # run a long schedule in pieces: stop, then --resume
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if self.float_epochs < 0 or self.epochs < 1 or self.finetune_epochs < 0:
            raise ValueError("TrainConfig: epochs must be >= 1, float_epochs and finetune_epochs >= 0.")
        if self.finetune_epochs and not self.float_checkpoint:
            raise ValueError(
                f"TrainConfig(finetune_epochs={self.finetune_epochs}) fine-tunes a "
                "float_checkpoint; pass one, or use float_epochs to train the float model here."
            )
        if self.validation < 0:
            raise ValueError(f"TrainConfig(validation={self.validation}) must be >= 0.")
        for rename in self.float_checkpoint_rename:
            if "=" not in rename or rename.startswith("="):
                raise ValueError(
                    f"TrainConfig(float_checkpoint_rename=...{rename!r}) must read OLD=NEW, "
                    "e.g. 'linear.=fc.'."
                )
        if not self.mixed_precision and self.target_bits not in SUPPORTED_BITS:
            raise ValueError(
                f"TrainConfig(target_bits={self.target_bits}): without mixed_precision the bits must be an "
                f"integer in {SUPPORTED_BITS.start}..{SUPPORTED_BITS.stop - 1}; pass mixed_precision=True "
                "for a fractional average."
            )
        for name, allowed in (
            ("weight_quantizer", names("weight")),
            ("activation_quantizer", names("activation")),
            ("threshold_init", get_args(ThresholdInit)),
        ):
            if getattr(self, name) not in allowed:
                listed = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
                raise ValueError(f"TrainConfig({name}={getattr(self, name)!r}) must be {listed}.")
        if self.kernels not in KERNEL_BACKENDS:
            raise ValueError(f"TrainConfig(kernels={self.kernels!r}) must be one of {KERNEL_BACKENDS}.")
        if any(b not in SUPPORTED_BITS for b in self.bit_options):
            raise ValueError(f"TrainConfig(bit_options={self.bit_options}): each must be in 2..8.")
        for name in ("lr", "float_lr", "finetune_lr", "batch_size", "kd_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig({name}={getattr(self, name)}) must be positive.")


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
