"""TrainConfig: every setting of the recipe, frozen and validated, turned into CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

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
    # torchvision models: start from torchvision's pre-trained weights (the weight enum's DEFAULT)
    pretrained: bool = False
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
    kd_teacher: str | None = None  # a torchvision model with pre-trained weights; None: the float start
    kd_temperature: float = 1.0
    kd_hard_weight: float = 0.0
    # data and machine
    validation: int = 0  # hold out the last N training images (N / classes per class): choices are made there
    train_subset: int | None = None
    test_subset: int | None = None
    data_seed: int | None = None  # which subset images; None: the run's seed (fixed: paired comparisons)
    image_size: int = 32
    # "memory": decode once into tensors (CIFAR-sized data); "stream": DataLoader workers decode each
    # batch (ImageNet-sized); "auto": stream when the decoded images would exceed STREAM_ABOVE_BYTES
    loader: Literal["auto", "memory", "stream"] = "auto"
    workers: int | None = None  # loader worker processes per rank; None: the CPU cores / local ranks, <= 8
    download: bool = False
    device: str = "auto"
    bf16: bool | None = None  # None: on when training on CUDA
    channels_last: bool | None = None  # None: on when training on CUDA
    compile: bool = False
    kernels: KernelBackend = "auto"  # adq_fx.set_kernel_backend for the run
    resume: bool = False
    stop_after_epochs: int | None = None  # run a long schedule in pieces: stop, then --resume
    stop_after_steps: int | None = None  # the same, counted in optimizer steps (stops mid-epoch)
    checkpoint_every: int = 0  # optimizer steps between mid-epoch checkpoints; 0: at each epoch's end only
    tensorboard: str | None = None  # log dir for torch.utils.tensorboard (pip install tensorboard)
    recipe: str | None = None  # the preset (RECIPES) these settings started from, recorded for the run
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if self.float_epochs < 0 or self.epochs < 1 or self.finetune_epochs < 0:
            raise ValueError("TrainConfig: epochs must be >= 1, float_epochs and finetune_epochs >= 0.")
        if self.finetune_epochs and not (self.float_checkpoint or self.pretrained):
            raise ValueError(
                f"TrainConfig(finetune_epochs={self.finetune_epochs}) fine-tunes a float_checkpoint or "
                "pretrained weights; pass one, or use float_epochs to train the float model here."
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
        if self.float_checkpoint and self.pretrained:
            raise ValueError(
                "TrainConfig: pass float_checkpoint or pretrained, not both: each names the float start."
            )
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"TrainConfig(recipe={self.recipe!r}) must be one of {sorted(RECIPES)}.")
        for name in ("workers", "stop_after_steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"TrainConfig({name}={value}) must be >= 0.")
        for name in ("lr", "float_lr", "finetune_lr", "batch_size", "kd_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig({name}={getattr(self, name)}) must be positive.")

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> TrainConfig:
        """The preset ``name`` (RECIPES) with ``overrides`` on top: defaults < recipe < overrides."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}: use one of {sorted(RECIPES)}.")
        return cls(**{**RECIPES[name], **overrides, "recipe": name})


# Presets: the settings a named experiment changes from the defaults.
RECIPES: dict[str, dict[str, Any]] = {
    # The ADQ paper's ImageNet setting (§4.1): SGD, lr 0.3, cosine to zero over 120 epochs, first conv
    # and last FC float, weights and activations at the same per-layer bits, mixed precision at
    # Table 4.3's 2.81 average (45/16 over ResNet-18's 16 block convs). The paper gives no batch size:
    # 1024 (128 per GPU on 8) makes lr 0.3 the linear-scaling twin of 0.075 at 256, under the 0.1 a
    # ResNet trains from scratch with, as befits a pre-trained start. Weight decay 1e-4 as torchvision's
    # ResNet recipe; the paper gives none. Add --kd-teacher resnet101 for the paper's KD rows.
    "imagenet": {
        "model": "resnet18",
        "pretrained": True,
        "image_size": 224,
        "loader": "stream",
        "epochs": 120,
        "lr": 0.3,
        "batch_size": 1024,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "mixed_precision": True,
        "target_bits": 2.8125,
        "bit_options": (2, 3, 4),
        "sensitivity_batches": 8,
        "out_dir": "runs/imagenet",
        "float_cache": "runs/float-cache",
        "checkpoint_every": 1000,
    },
    # The QAT settings of the pre-trained CIFAR-10 table (benchmarks/ablation.py --schedule pretrained);
    # pass the float start with --float-checkpoint (and --finetune-epochs 3 as the table does).
    "cifar10": {
        "model": "resnet20",
        "image_size": 32,
        "loader": "memory",
        "epochs": 1,
        "lr": 0.01,
        "batch_size": 128,
        "validation": 5000,
        "out_dir": "runs/cifar10",
    },
}


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
