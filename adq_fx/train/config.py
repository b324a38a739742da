"""TrainConfig: every setting of the recipe, frozen and validated, turned into CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .. import quantizers  # noqa: F401  (registers the built-in quantizers)
from ..config import SUPPORTED_BITS, ThresholdInit
from ..kernels import KernelBackend
from ..registry import names


def _doc(group: str, help: str, **extra: Any) -> dict[str, Any]:
    """A field's CLI help and --help group (GROUPS), so the flag reads as the setting means."""
    return {"group": group, "help": help, **extra}


# The --help groups of `adq-fx train`, in their order, with the sentence shown under each title.
GROUPS: dict[str, str] = {
    "run": "what the run starts from: a preset, a file, and these flags on top",
    "data": "the images and how they are split and loaded",
    "model": "the network and its float start: trained here, a checkpoint, or pre-trained weights",
    "quantization": "quantizers, bits and ADQ codebooks",
    "schedule": "QAT optimiser and schedule, seeds, stopping and resuming",
    "distillation": "knowledge distillation during QAT",
    "system": "device, speed settings and outputs",
}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The whole recipe. Defaults run the embedded digits set in about a minute on 2 CPU cores.

    Optimiser and schedule follow the ADQ paper (§4.1): SGD with cosine decay
    to zero; quantizer parameters in their own group at ``quantizer_lr_scale``
    times the learning rate, without weight decay (as N2UQ).
    """

    # Each field's help sentence and --help group (metadata) are what `adq-fx train --help` shows.
    dataset: str = field(
        default="digits",
        metadata=_doc(
            "data",
            "The data: digits (embedded), cifar10:DIR, or imagefolder:DIR (train/ and test/).",
            metavar="NAME",
        ),
    )
    model: str = field(
        default="digits_cnn",
        metadata=_doc(
            "model",
            "The network: resnet20/32/44/56/110 (CIFAR), digits_cnn, or a torchvision name.",
            metavar="NAME",
        ),
    )
    out_dir: str = field(
        default="runs/digits",
        metadata=_doc("system", "Where results.json, checkpoints and plots go.", metavar="DIR"),
    )
    seed: int = field(
        default=0,
        metadata=_doc("schedule", "Seed of the QAT phase (and of the data subset unless data_seed)."),
    )
    # The float start: trained here (float_epochs at float_lr), or a checkpoint, optionally fine-tuned;
    # float_cache keeps the result for every run that asks for the same start.
    float_checkpoint: str | None = field(
        default=None,
        metadata=_doc(
            "model",
            "Start from this state_dict file instead of training in float (a 'module.' prefix is stripped).",
            metavar="PATH",
        ),
    )
    float_checkpoint_rename: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "model", "OLD=NEW key-prefix renames that make float_checkpoint fit the model.", metavar="OLD=NEW"
        ),
    )
    float_epochs: int = field(
        default=20,
        metadata=_doc("model", "Epochs of float training when there is no checkpoint or pretrained."),
    )
    float_lr: float = field(default=0.05, metadata=_doc("model", "Learning rate of float training."))
    finetune_epochs: int = field(
        default=0,
        metadata=_doc("model", "Epochs of float fine-tuning of float_checkpoint or pretrained weights."),
    )
    finetune_lr: float = field(default=0.02, metadata=_doc("model", "Learning rate of float fine-tuning."))
    float_cache: str | None = field(
        default=None,
        metadata=_doc(
            "model",
            "Keep the float start here and reuse it in every run that asks for the same one.",
            metavar="DIR",
        ),
    )
    float_seed: int = field(
        default=0, metadata=_doc("model", "Seed of the float phase, so QAT seeds share one float model.")
    )
    pretrained: bool = field(
        default=False,
        metadata=_doc(
            "model", "Start a torchvision model from its pre-trained weights (the enum's DEFAULT)."
        ),
    )
    # What to quantize and how: ADQ (adq + n2uq), N2UQ (n2uq + n2uq), LSQ (lsq + lsq), POST weights.
    weight_quantizer: str = field(
        default="adq",
        metadata=_doc(
            "quantization",
            "Weight quantizer, any name registered in adq_fx.registry (adq, n2uq, lsq, post built in).",
            choices=lambda: names("weight"),
        ),
    )
    activation_quantizer: str = field(
        default="n2uq",
        metadata=_doc(
            "quantization",
            "Activation quantizer, any name registered in adq_fx.registry (n2uq, lsq, asq built in).",
            choices=lambda: names("activation"),
        ),
    )
    threshold_init: ThresholdInit = field(
        default="auto",
        metadata=_doc(
            "quantization",
            "How n2uq thresholds start: N2UQ's fixed [0, 2] where the data fits it, else the data's range "
            "(auto), always fixed (uniform), or LSQ's data rule (first_batch).",
        ),
    )
    target_bits: float = field(
        default=3.0,
        metadata=_doc("quantization", "Bits per layer, or their average budget with mixed_precision."),
    )
    bit_options: tuple[int, ...] = field(
        default=(2, 3, 4),
        metadata=_doc("quantization", "The bits mixed precision chooses each layer's from."),
    )
    mixed_precision: bool = field(
        default=False,
        metadata=_doc(
            "quantization", "Allocate per-layer bits from sensitivities to meet target_bits on average."
        ),
    )
    bit_allocation: Literal["eq9", "min_loss"] = field(
        default="min_loss",
        metadata=_doc(
            "quantization",
            "Mixed-precision rule: the paper's log-proportional bits (eq9) or the least estimated "
            "loss from weight noise at the same average (min_loss).",
        ),
    )
    sensitivity_batches: int = field(
        default=8, metadata=_doc("quantization", "Batches the per-layer sensitivities are measured on.")
    )
    quantize_first_last: bool = field(
        default=False, metadata=_doc("quantization", "Quantize the first conv and the last linear layer too.")
    )
    codebook_levels: Literal["alg1", "full"] = field(
        default="full",
        metadata=_doc(
            "quantization", "ADQ codebook size: all 2^bits levels (full) or Alg. 1's 2^bits - 1 (alg1)."
        ),
    )
    codebook_init: Literal["quantile", "normal"] = field(
        default="quantile",
        metadata=_doc("quantization", "ADQ codebook start: weight quantiles or normal-distribution levels."),
    )
    codebook_kmeans_steps: int = field(
        default=20,
        metadata=_doc(
            "quantization", "k-means steps on the float weights after the codebook init (0: Alg. 1)."
        ),
    )
    threshold_grad_scale: bool = field(
        default=False,
        metadata=_doc("quantization", "Apply LSQ's gradient scale to the threshold parameters."),
    )
    learn_codebook: bool = field(
        default=True, metadata=_doc("quantization", "Learn the ADQ codebook levels during QAT.")
    )
    commitment_beta: float = field(
        default=0.25, metadata=_doc("quantization", "Weight of ADQ's commitment loss.")
    )
    commitment_units: Literal["channel", "layer"] = field(
        default="layer",
        metadata=_doc(
            "quantization",
            "Units of ADQ's commitment loss: each channel's RMS (eq. 3) or the layer's (stable at any beta).",
        ),
    )
    codebook_ema_decay: float = field(
        default=0.99, metadata=_doc("quantization", "Decay of the ADQ codebook's EMA k-means (eqs. 5-7).")
    )
    codebook_warm_start: bool = field(
        default=True,
        metadata=_doc(
            "quantization",
            "Start the codebook's EMA statistics as if its init had been seen once (false: from zero).",
        ),
    )
    int8_grid: bool = field(
        default=False,
        metadata=_doc(
            "quantization", "Keep ADQ codebooks on the int8 grid (CodebookWeightConfig.int8_grid)."
        ),
    )
    epochs: int = field(default=10, metadata=_doc("schedule", "Epochs of quantization-aware training."))
    lr: float = field(default=0.01, metadata=_doc("schedule", "QAT learning rate, cosine-decayed to zero."))
    momentum: float = field(default=0.9, metadata=_doc("schedule", "SGD momentum."))
    weight_decay: float = field(
        default=5e-4, metadata=_doc("schedule", "SGD weight decay (not on quantizer parameters).")
    )
    quantizer_lr_scale: float = field(
        default=0.1, metadata=_doc("schedule", "Quantizer parameters' learning rate as a multiple of lr.")
    )
    batch_size: int = field(
        default=128, metadata=_doc("schedule", "Images per optimizer step, all ranks together.")
    )
    kd: bool = field(
        default=False, metadata=_doc("distillation", "Distil from a teacher with N2UQ's soft cross-entropy.")
    )
    kd_teacher: str | None = field(
        default=None,
        metadata=_doc(
            "distillation",
            "A torchvision model with pre-trained weights as the teacher (unset: the float start).",
            metavar="NAME",
        ),
    )
    kd_temperature: float = field(
        default=1.0, metadata=_doc("distillation", "Softmax temperature of distillation.")
    )
    kd_hard_weight: float = field(
        default=0.0,
        metadata=_doc("distillation", "Weight of the hard-label cross-entropy beside distillation."),
    )
    validation: int = field(
        default=0,
        metadata=_doc(
            "data", "Hold out the last N training images (N / classes per class) to make choices on."
        ),
    )
    train_subset: int | None = field(
        default=None, metadata=_doc("data", "Train on this many training images (unset: all).")
    )
    test_subset: int | None = field(
        default=None, metadata=_doc("data", "Test on this many test images (unset: all).")
    )
    data_seed: int | None = field(
        default=None,
        metadata=_doc(
            "data", "Which subset images are drawn (unset: the seed; fix it for paired comparisons)."
        ),
    )
    image_size: int = field(default=32, metadata=_doc("data", "Side in pixels images are resized to."))
    loader: Literal["auto", "memory", "stream"] = field(
        default="auto",
        metadata=_doc(
            "data",
            "memory decodes once into tensors (CIFAR-sized), stream decodes each batch in workers "
            "(ImageNet-sized), auto streams when the decoded images would not fit the memory budget.",
        ),
    )
    workers: int | None = field(
        default=None,
        metadata=_doc(
            "data", "Loader worker processes per rank (unset: CPU cores / local ranks, at most 8)."
        ),
    )
    download: bool = field(default=False, metadata=_doc("data", "Download cifar10 if it is not in DIR."))
    device: str = field(
        default="auto",
        metadata=_doc("system", "cpu, cuda, cuda:N, or auto (CUDA when there is one).", metavar="DEVICE"),
    )
    bf16: bool | None = field(
        default=None, metadata=_doc("system", "bf16 autocast (unset: on when training on CUDA).")
    )
    channels_last: bool | None = field(
        default=None,
        metadata=_doc("system", "channels_last memory format (unset: on when training on CUDA)."),
    )
    compile: bool = field(default=False, metadata=_doc("system", "torch.compile the model for training."))
    kernels: KernelBackend = field(
        default="auto", metadata=_doc("system", "adq_fx.set_kernel_backend for the run.")
    )
    resume: bool = field(
        default=False, metadata=_doc("schedule", "Continue from the checkpoints in out_dir.")
    )
    stop_after_epochs: int | None = field(
        default=None, metadata=_doc("schedule", "Stop after this many epochs, to --resume later.")
    )
    stop_after_steps: int | None = field(
        default=None,
        metadata=_doc("schedule", "Stop after this many optimizer steps (mid-epoch), to --resume."),
    )
    checkpoint_every: int = field(
        default=0,
        metadata=_doc(
            "schedule", "Optimizer steps between mid-epoch checkpoints (0: at each epoch's end only)."
        ),
    )
    tensorboard: str | None = field(
        default=None,
        metadata=_doc("system", "Log to this TensorBoard dir (pip install tensorboard).", metavar="DIR"),
    )
    recipe: str | None = field(
        default=None,
        metadata=_doc(
            "run",
            "Start from this preset (RECIPES); the run records it.",
            choices=lambda: sorted(RECIPES),
        ),
    )
    progress: bool = field(default=True, metadata=_doc("system", "Show progress bars."))
    plots: bool = field(default=True, metadata=_doc("system", "Write plots beside results.json."))

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
        literal_fields = [
            (f.name, get_args(hint))
            for f in fields(self)
            if get_origin(hint := _FIELD_TYPES[f.name]) is Literal
        ]
        for name, allowed in (
            ("weight_quantizer", names("weight")),
            ("activation_quantizer", names("activation")),
            *literal_fields,  # threshold_init, kernels, codebook_levels, loader, ...
        ):
            if getattr(self, name) not in allowed:
                listed = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
                raise ValueError(f"TrainConfig({name}={getattr(self, name)!r}) must be {listed}.")
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
    # ResNet-18's three 1x1 downsample convs are quantized too (the paper counts 16 layers), so the
    # bit budget round(19 x 2.8125) = 53 spreads over 19 layers: a mean of 53/19, slightly under.
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
        "bit_allocation": "eq9",  # the paper's allocation, as Table 4.3's plan was made
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


# TrainConfig's resolved field types (its annotations are strings here), for checking Literal fields.
_FIELD_TYPES: dict[str, Any] = get_type_hints(TrainConfig)
