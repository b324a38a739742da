"""The recipe: float training, sensitivity, bit allocation, prepare, QAT (+KD), convert, report."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from tqdm.auto import tqdm

from .. import (
    ADQConfig,
    allocate_bits,
    allocate_bits_min_loss,
    convert_adq,
    layer_noise_weights,
    layer_sensitivity,
    model_size_bits,
    prepare_adq,
    qconfig_mapping_from_plan,
    quantization_map,
)
from ..environment import machine_info
from ..int8.onednn import kernel_problem
from ..kernels import get_kernel_backend, kernel_backend
from ..mapping import ADQConfigMapping
from ..nn import QATConv2d, QATLinear
from ..optim import param_groups
from ..quantizers.thresholds import ThresholdActivationQuantizer
from ..registry import Role, entry_named
from .checkpoints import file_digest, load_float_state
from .config import TrainConfig
from .data import TrainEpoch, TrainingData, load_dataset
from .distributed import init_from_environment, local_world_size
from .loop import LossFn, cross_entropy_loss, qat_loss, train_one_epoch
from .models import build_model, build_teacher, load_pretrained
from .progress import Progress, Running
from .streaming import default_workers

PHASE_SEEDS = {"float": 1, "qat": 2}  # fixed, so runs and resumes are reproducible
LOG_EVERY = 20  # steps between progress-bar and TensorBoard updates (each costs one host sync)


class StopRequested(Exception):
    """Raised after ``stop_after_epochs`` epochs; the last checkpoint lets --resume continue."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: raised before a checkpoint could keep the broken
    weights, so the last checkpoint on disk is still one from before the divergence."""


def check_not_diverged(
    running: Running,
    phase: str,
    epoch: int,
    position: int,
    checkpoint: Path,
    model: nn.Module | None = None,
) -> None:
    """Raise :class:`TrainingDiverged` once the epoch's running loss (or, before a checkpoint,
    ``model``'s parameters and buffers: a step can break them, BatchNorm's running variance
    first, before a loss shows it) is not finite.

    The loss is checked where it is read anyway (the log steps, the epoch's end): no extra host
    sync, and a NaN stays in the running sum, so a late check still sees it. The state is checked
    only before a checkpoint is written, the one place a broken tensor would be kept.
    """
    total = float(running.loss_sum)
    saved = [] if model is None else [*model.parameters(), *model.buffers()]
    broken = not all(bool(torch.isfinite(t).all()) for t in saved if t.is_floating_point())
    if math.isfinite(total) and not broken:
        return
    what = f"the training loss is {total}" if not math.isfinite(total) else "the model's state is not finite"
    raise TrainingDiverged(
        f"{phase} phase, epoch {epoch + 1}: {what} by step {position}; the run "
        f"diverged and nothing after that was checkpointed. Lower the learning rate (--lr for QAT, "
        f"--float-lr or --finetune-lr for the float phase) and start again, or resume from "
        f"{checkpoint} with a lower one."
    )


class Runner:
    """Holds the device settings and data; each phase is a method."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dist, self.device = init_from_environment(config.device)
        on_cuda = self.device.type == "cuda"
        self.bf16 = on_cuda if config.bf16 is None else config.bf16
        self.channels_last = on_cuda if config.channels_last is None else config.channels_last
        torch.manual_seed(config.seed)
        workers = default_workers(local_world_size()) if config.workers is None else config.workers
        # a TensorDataset in memory, or a StreamingImageFolder: both offer what the phases read
        with self.dist.main_first():  # rank 0 decodes and caches (or downloads) the data once
            self.data: TrainingData = load_dataset(
                config.dataset,
                download=config.download,
                image_size=config.image_size,
                loader=config.loader,
                workers=workers,
            )
        data_seed = config.seed if config.data_seed is None else config.data_seed
        self.data.hold_out(config.validation)  # before the subset: the split never depends on it
        self.data.subset(config.train_subset, config.test_subset, data_seed).to(self.device)
        self.epochs_run = self.steps_run = 0
        self.board = None  # rank 0 alone logs
        if config.tensorboard is not None and self.dist.is_main:
            self.board = open_tensorboard(config.tensorboard)

    # -- shared loop ------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def prepare_input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    @property
    def has_validation(self) -> bool:
        return bool(self.data.has_validation)

    @torch.no_grad()
    def predictions(self, model: nn.Module, split: str = "test") -> Tensor:
        """Top-1 class of every test (or validation) image, on the model's device, under its autocast.

        Under torchrun each rank predicts its part of the split and every rank gets the whole."""
        model.eval()
        batches = [torch.empty(0, dtype=torch.long, device=self.device)]
        for x, _ in self.data.test_batches(512, split, shard=(self.dist.rank, self.dist.world_size)):
            with self.autocast():
                batches.append(model(self.prepare_input(x)).argmax(1))
        return self.dist.gather(torch.cat(batches), self.data.split_size(split), self.device)

    def accuracy(self, predicted: Tensor, split: str = "test") -> float:
        labels = self.data.labels(split)
        return 100.0 * int((predicted == labels.to(predicted.device)).sum()) / len(labels)

    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        return self.accuracy(self.predictions(model, split), split)

    def validate(self, model: nn.Module) -> float | None:
        """Validation top-1, or None without a validation split."""
        return self.evaluate(model, "val") if self.has_validation else None

    @torch.no_grad()
    def evaluate_int8(self, prepared: fx.GraphModule, reference_predictions: Tensor) -> dict[str, Any]:
        """Top-1 of the int8 model (CPU kernels, so it runs on CPU), and its agreement with the reference."""
        problem = kernel_problem()
        if problem is not None:
            return {"accuracy": None, "agreement": None, "skipped": problem}
        int8 = convert_adq(copy.deepcopy(prepared).cpu(), backend="int8")
        batches = [torch.empty(0, dtype=torch.long)]
        for x, _ in self.data.test_batches(512, shard=(self.dist.rank, self.dist.world_size)):
            x = x.cpu().contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.cpu()
            batches.append(int8(x).argmax(1))
        predicted = self.dist.gather(torch.cat(batches), self.data.split_size("test"), self.device)
        agreement = (predicted == reference_predictions.cpu()).float().mean()
        return {"accuracy": self.accuracy(predicted), "agreement": 100.0 * float(agreement), "skipped": None}

    def fit(
        self,
        model: nn.Module,
        phase: str,
        *,
        epochs: int,
        lr: float,
        loss_fn: LossFn,
        seed: int | None = None,
    ) -> list[dict]:
        """SGD + cosine to zero, checkpointed at each epoch's end and every ``checkpoint_every`` steps;
        ``resume`` continues bit-identically from the last checkpoint, mid-epoch included."""
        cfg = self.config
        seed = cfg.seed if seed is None else seed
        groups = param_groups(
            model, lr=lr, weight_decay=cfg.weight_decay, lr_scales={"thresholds": cfg.quantizer_lr_scale}
        )
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
        world = self.dist.world_size
        steps = self.data.steps_per_epoch(cfg.batch_size, world)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps)
        phase_seed = seed * 1000 + PHASE_SEEDS[phase]
        generator = torch.Generator().manual_seed(phase_seed)
        progress = Progress(self.out / f"{phase}_last.pt")
        if cfg.resume and progress.path.exists():
            progress.restore(model, optimizer, schedule, generator)
        step_fn = self.dist.wrap(model, self.device)
        # torch.compile of a module returns a module (an OptimizedModule wrapping it).
        step_fn = cast(nn.Module, torch.compile(step_fn)) if cfg.compile else step_fn
        for epoch in range(progress.epoch, epochs):
            began = time.perf_counter()
            model.train()
            batches = self.data.train_epoch(
                epoch,
                batch_size=cfg.batch_size,
                seed=phase_seed,
                rank=self.dist.rank,
                world_size=world,
                start_step=progress.step,
                state=progress.epoch_state,
                generator=generator,
            )
            running = progress.running or Running.zero(self.device)
            bar = self.epoch_bar(phase, epoch, epochs, batches)

            train_one_epoch(
                step_fn,
                batches,
                optimizer=optimizer,
                schedule=schedule,
                loss_fn=loss_fn,
                running=running,
                start_step=batches.start_step,
                autocast=self.autocast,
                prepare_input=self.prepare_input,
                after_step=self.step_hook(
                    phase, epoch, batches, bar, running, progress, model, optimizer, schedule, generator
                ),
            )
            bar.close()
            check_not_diverged(running, phase, epoch, batches.steps, progress.path, model)
            self.dist.sync_buffers(model)
            record = {
                "epoch": epoch,
                **running.summary(),
                "val_acc": self.validate(model),
                "test_acc": self.evaluate(model),
                "lr": schedule.get_last_lr()[0],
                "seconds": time.perf_counter() - began + running.seconds_before,
            }
            progress.history.append(record)
            self.log_epoch(phase, record)
            if self.dist.is_main:
                progress.save(model, optimizer, schedule, generator, (epoch + 1, 0), None, None)
            progress.step, progress.epoch_state, progress.running = 0, None, None
            self.epochs_run += 1
            more_to_do = epoch + 1 < epochs or phase == "float"
            if cfg.stop_after_epochs is not None and self.epochs_run >= cfg.stop_after_epochs and more_to_do:
                raise StopRequested(f"stopped after {self.epochs_run} epochs in phase {phase!r}")
            if self.stop_now() and more_to_do:
                raise StopRequested(f"stopped after {self.steps_run} steps in phase {phase!r}")
        return progress.history

    def step_hook(
        self,
        phase: str,
        epoch: int,
        batches: TrainEpoch,
        bar: tqdm,
        running: Running,
        progress: Progress,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        generator: torch.Generator,
    ) -> Callable[[int], None]:
        """What follows each optimizer step: the bar, logs every LOG_EVERY steps, mid-epoch checkpoints
        every ``checkpoint_every`` steps, and the stop after ``stop_after_steps``."""
        cfg = self.config

        def after_step(position: int) -> None:
            self.steps_run += 1
            bar.update(1)
            due = bool(cfg.checkpoint_every) and position % cfg.checkpoint_every == 0
            saving = position < batches.steps and (due or self.stop_now())
            if position % LOG_EVERY == 0 or position == batches.steps or saving:
                check_not_diverged(running, phase, epoch, position, progress.path, model if saving else None)
            if position % LOG_EVERY == 0 or position == batches.steps:
                global_step = epoch * batches.steps + position
                self.log_step(bar, phase, global_step, running, schedule, self.dist.world_size)
            if saving:
                if self.dist.is_main:
                    where = (epoch, position)
                    progress.save(model, optimizer, schedule, generator, where, batches.state, running)
                if self.stop_now():
                    bar.close()
                    raise StopRequested(
                        f"stopped after {self.steps_run} steps in phase {phase!r} "
                        f"(epoch {epoch + 1}, step {position} of {batches.steps})"
                    )

        return after_step

    def stop_now(self) -> bool:
        limit = self.config.stop_after_steps
        return limit is not None and self.steps_run >= limit

    def epoch_bar(self, phase: str, epoch: int, epochs: int, batches: TrainEpoch) -> tqdm:
        """One bar per epoch; off on non-zero ranks, with progress=False, and when stderr is no TTY."""
        return tqdm(
            total=batches.steps,
            initial=batches.start_step,
            desc=f"{phase} {epoch + 1}/{epochs}",
            disable=None if self.config.progress and self.dist.is_main else True,
            leave=False,
            dynamic_ncols=True,
        )

    def log_step(self, bar: tqdm, phase: str, step: int, running: Running, schedule: Any, world: int) -> None:
        """Loss, lr and throughput on the bar and in TensorBoard (one host sync every LOG_EVERY steps)."""
        if bar.disable and self.board is None:
            return
        loss, lr = running.recent_loss(), schedule.get_last_lr()[0]
        throughput = running.images_per_second() * world
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", img_s=f"{throughput:.0f}", refresh=False)
        if self.board is not None:
            self.board.add_scalar(f"{phase}/loss", loss, step)
            self.board.add_scalar(f"{phase}/lr", lr, step)
            self.board.add_scalar(f"{phase}/images_per_second", throughput, step)

    def log_epoch(self, phase: str, record: dict[str, Any]) -> None:
        if self.board is None:
            return
        for key in ("train_loss", "train_acc", "val_acc", "test_acc"):
            if record[key] is not None:
                self.board.add_scalar(f"{phase}/epoch_{key}", record[key], record["epoch"])
        self.board.flush()

    # -- phases -----------------------------------------------------------------
    def float_model(self) -> tuple[nn.Module, list[dict]]:
        """The float start: from the cache, from a checkpoint (optionally fine-tuned), or trained here."""
        cfg = self.config
        torch.manual_seed(cfg.float_seed)
        model = build_model(cfg.model, self.data.num_classes, self.data.in_channels)
        if cfg.pretrained:
            with self.dist.main_first():  # one download into torch.hub's cache, then every rank reads it
                load_pretrained(model, cfg.model)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        settings = self.float_settings() if cfg.float_cache is not None else {}
        cache = self.float_cache_path(settings)
        if cache is not None and cache.exists():
            entry = torch.load(cache, map_location=self.device, weights_only=True)
            model.load_state_dict(entry["model"])
            history = entry["history"]
        else:
            epochs, lr = cfg.float_epochs, cfg.float_lr  # trained here from scratch, or ...
            if cfg.float_checkpoint:  # ... loaded, then fine-tuned
                load_float_state(model, cfg.float_checkpoint, cfg.float_checkpoint_rename)
            if cfg.float_checkpoint or cfg.pretrained:
                epochs, lr = cfg.finetune_epochs, cfg.finetune_lr
            history = []
            if epochs:
                history = self.fit(
                    model, "float", epochs=epochs, lr=lr, loss_fn=cross_entropy_loss, seed=cfg.float_seed
                )
            if cache is not None and self.dist.is_main:
                cache.parent.mkdir(parents=True, exist_ok=True)
                partial = cache.with_suffix(".partial")
                torch.save({"model": model.state_dict(), "history": history, "settings": settings}, partial)
                partial.replace(cache)  # atomic: a concurrent reader never sees half a file
        torch.manual_seed(cfg.seed)  # the QAT phase's randomness follows the run's own seed
        return model, history

    def teacher(self, student_start: nn.Module) -> nn.Module | None:
        """The frozen KD teacher: a named torchvision model with pre-trained weights, or the float start."""
        cfg = self.config
        if cfg.kd_teacher is not None:
            with self.dist.main_first():
                teacher = build_teacher(cfg.kd_teacher, self.data.num_classes).to(self.device)
        elif cfg.kd:
            teacher = copy.deepcopy(student_start)
        else:
            return None
        if self.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        return teacher.eval().requires_grad_(False)

    def float_settings(self) -> dict[str, Any]:
        """Everything the float start depends on: the cache key."""
        cfg = self.config
        settings: dict[str, Any] = {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "image_size": cfg.image_size,
            "validation": cfg.validation,
            "train_subset": cfg.train_subset,
            "float_seed": cfg.float_seed,
            "batch_size": cfg.batch_size,
            "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay,
        }
        if cfg.train_subset is not None:  # which images the subset holds follows the data seed
            settings["data_seed"] = cfg.seed if cfg.data_seed is None else cfg.data_seed
        if cfg.float_checkpoint:
            settings.update(
                checkpoint_sha256=file_digest(cfg.float_checkpoint),
                rename=list(cfg.float_checkpoint_rename),
                finetune_epochs=cfg.finetune_epochs,
                finetune_lr=cfg.finetune_lr,
            )
        elif cfg.pretrained:
            settings.update(
                pretrained=cfg.model, finetune_epochs=cfg.finetune_epochs, finetune_lr=cfg.finetune_lr
            )
        else:
            settings.update(float_epochs=cfg.float_epochs, float_lr=cfg.float_lr)
        return settings

    def float_cache_path(self, settings: dict[str, Any]) -> Path | None:
        """Where the float start of ``settings`` (float_settings()) is cached, or None without a cache."""
        if self.config.float_cache is None:
            return None
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.config.float_cache) / f"float-{self.config.model}-{key}.pt"

    def example_inputs(self) -> tuple[Tensor]:
        x, _ = self.data.batch_at(torch.arange(min(64, self.data.train_size)))
        return (self.prepare_input(x.to(self.device)),)

    def base_config(self) -> ADQConfig:
        """The per-layer config at 3 bits; the bit plan then sets each layer's bits."""
        cfg = self.config
        options: dict[tuple[str, str], dict[str, Any]] = {  # the quantizers TrainConfig has knobs for
            ("weight", "adq"): dict(
                levels=cfg.codebook_levels,
                init=cfg.codebook_init,
                learn_codebook=cfg.learn_codebook,
                commitment_beta=cfg.commitment_beta,
                commitment_units=cfg.commitment_units,
                ema_decay=cfg.codebook_ema_decay,
                warm_start=cfg.codebook_warm_start,
                pin_zero=cfg.codebook_levels == "alg1",
                seed=cfg.seed,
                kmeans_init_steps=cfg.codebook_kmeans_steps,
                int8_grid=cfg.int8_grid,
            ),
            ("activation", "n2uq"): dict(init=cfg.threshold_init, grad_scale=cfg.threshold_grad_scale),
        }
        chosen: tuple[tuple[Role, str], ...] = (
            ("weight", cfg.weight_quantizer),
            ("activation", cfg.activation_quantizer),
        )
        built = {
            role: entry_named(role, name).config(bits=3, **options.get((role, name), {}))
            for role, name in chosen
        }
        return ADQConfig(**built)

    def bit_plan(self, model: nn.Module) -> tuple[dict[str, tuple[int, int]], dict[str, float]]:
        """Fixed bits, or eq. (8) sensitivities on the float model + allocate_bits (weights = activations)."""
        cfg = self.config
        probe = ADQConfigMapping(keep_first_and_last_float=not cfg.quantize_first_last)
        probe.set_global(self.base_config())
        layers = list(quantization_map(prepare_adq(model, probe, self.example_inputs())))
        if not cfg.mixed_precision:
            bits = int(cfg.target_bits)
            return {name: (bits, bits) for name in layers}, {}
        generator = torch.Generator().manual_seed(cfg.seed)
        count = min(cfg.sensitivity_batches, max(1, self.data.train_size // cfg.batch_size))
        batches = []
        for _ in range(count):
            index = torch.randint(0, self.data.train_size, (cfg.batch_size,), generator=generator)
            x, y = self.data.batch_at(index)
            batches.append((self.prepare_input(x), y))
        scores = layer_sensitivity(model, batches, F.cross_entropy)
        scores = {name: scores[name] for name in layers}
        if cfg.bit_allocation == "min_loss":
            noise = layer_noise_weights(model, scores)
            allocated = allocate_bits_min_loss(noise, cfg.target_bits, cfg.bit_options)
        else:
            allocated = allocate_bits(scores, cfg.target_bits, cfg.bit_options)
        return {name: (b, b) for name, b in allocated.items()}, scores


def run_training(config: TrainConfig) -> dict[str, Any]:
    """Run the whole recipe; write results.json, checkpoints and plots under config.out_dir."""
    started = time.perf_counter()
    with kernel_backend(config.kernels):
        runner = Runner(config)
        try:
            return _run_phases(runner, started)
        except StopRequested as stop:
            return {"stopped": True, "reason": str(stop), "config": asdict(config)}
        finally:
            if runner.board is not None:
                runner.board.close()
            runner.dist.close()


def _run_phases(runner: Runner, started: float) -> dict[str, Any]:
    config = runner.config
    model, float_history = runner.float_model()
    float_acc = runner.evaluate(model)
    validation = {"float": runner.validate(model)}
    if runner.dist.is_main:
        torch.save({"model": model.state_dict()}, runner.out / "float.pt")

    plan, sensitivities = runner.bit_plan(model)
    mapping = qconfig_mapping_from_plan(plan, runner.base_config())
    prepared = prepare_adq(model, mapping, runner.example_inputs())
    snapshots = {"init": _codebook_snapshot(prepared)}
    teacher = runner.teacher(model)
    qat_history = runner.fit(
        prepared,
        "qat",
        epochs=config.epochs,
        lr=config.lr,
        loss_fn=qat_loss(teacher, temperature=config.kd_temperature, hard_weight=config.kd_hard_weight),
    )
    snapshots["final"] = _codebook_snapshot(prepared)
    threshold_starts = _threshold_starts(prepared)
    qat_acc = runner.evaluate(prepared)
    prepared.eval()
    converted = convert_adq(prepared, backend="reference")  # computes exactly what was trained
    validation["converted"] = runner.validate(converted)
    reference_predictions = runner.predictions(converted)
    converted_acc = runner.accuracy(reference_predictions)
    int8 = runner.evaluate_int8(prepared, reference_predictions)  # what a CPU deployment computes
    qmap = quantization_map(converted)
    if runner.dist.is_main:
        torch.save({"model": converted.state_dict(), "quantization_map": qmap}, runner.out / "converted.pt")

    counts = [qmap[n]["num_params"] for n in plan]
    w_bits = [plan[n][0] for n in plan]
    results = {
        "config": asdict(config),
        "machine": {
            **machine_info(runner.device),
            "bf16": runner.bf16,
            "channels_last": runner.channels_last,
            "world_size": runner.dist.world_size,
            "kernels": get_kernel_backend(),
        },
        "data": {
            "name": runner.data.name,
            "loader": type(runner.data).__name__,
            "train": runner.data.train_size,
            "validation": runner.data.split_size("val"),
            "test": runner.data.split_size("test"),
        },
        "validation_accuracy": validation,
        "float_accuracy": float_acc,
        "qat_accuracy": qat_acc,
        "converted_accuracy": converted_acc,
        "int8_accuracy": int8["accuracy"],
        "int8_agreement": int8["agreement"],
        "int8_skipped": int8["skipped"],
        "threshold_starts": threshold_starts,
        "bit_plan": {n: list(b) for n, b in plan.items()},
        "sensitivities": sensitivities,
        "average_bits": sum(w_bits) / len(w_bits),
        "parameter_weighted_bits": sum(b * c for b, c in zip(w_bits, counts, strict=True)) / sum(counts),
        "size_bits": {"float": model_size_bits(model), "converted": model_size_bits(converted)},
        "history": {"float": float_history, "qat": qat_history},
        "seconds": time.perf_counter() - started,
    }
    if not runner.dist.is_main:
        return results
    (runner.out / "results.json").write_text(json.dumps(results, indent=2))
    if config.plots:
        from .plots import save_plots

        save_plots(results, snapshots, runner.out)
    return results


def open_tensorboard(log_dir: str) -> Any:
    """torch.utils.tensorboard's writer; the tensorboard package is an optional dependency."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            f"--tensorboard {log_dir} needs the tensorboard package: pip install tensorboard "
            f"(or leave out --tensorboard). ({err})"
        ) from err
    return SummaryWriter(log_dir)


def _threshold_starts(prepared: nn.Module) -> dict[str, int]:
    """How many threshold quantizers kept N2UQ's fixed start and how many the data moved (init="auto")."""
    counts: Counter[str] = Counter()
    for module in prepared.modules():
        if isinstance(module, ThresholdActivationQuantizer):
            counts[module.started_from or "from_checkpoint"] += 1
    return dict(sorted(counts.items()))


def _codebook_snapshot(prepared: nn.Module, layers: int = 3) -> dict[str, dict[str, list[float]]]:
    """Normalised weights and codebook of the first few QAT layers, for the histogram plot."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, module in prepared.named_modules():
        if isinstance(module, (QATConv2d, QATLinear)) and len(out) < layers:
            q = module.weight_quantizer
            scale = q.channel_scale(module.weight).detach().float()
            normalised = (module.weight.detach().float().flatten(1) / scale.view(-1, 1)).flatten()
            out[name] = {"weights": normalised.cpu().tolist()[:20000], "codebook": q.levels().cpu().tolist()}
    return out
