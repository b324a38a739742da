"""The embedded default run: a small CNN on scikit-learn's bundled digits.

Train in float, prepare at each bit-width, QAT with the commitment loss,
convert, and report float / QAT / converted accuracy and model size. Needs no
download: the 1,797 8x8 digits ship inside scikit-learn.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import convert_adq, default_qconfig_mapping, model_size_bits, prepare_adq
from .environment import describe, machine_info
from .int8.onednn import kernel_problem
from .nn import QATConv2d, QATLinear
from .optim import param_groups
from .train.data import TensorDataset, load_digits_tensors
from .train.loop import cross_entropy_loss, qat_loss, train_one_epoch
from .train.models import DigitsCNN
from .train.progress import Running


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    float_epochs: int = 30
    qat_epochs: int = 15
    bits: tuple[int, ...] = (3, 2)
    batch_size: int = 64
    float_lr: float = 0.05
    qat_lr: float = 0.01
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.float_epochs < 1 or self.qat_epochs < 1:
            raise ValueError("DemoConfig: float_epochs and qat_epochs must be at least 1.")
        if not self.bits:
            raise ValueError("DemoConfig(bits=()) needs at least one bit-width.")


def train(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    desc: str,
    progress: bool,
) -> None:
    """SGD + cosine to zero (the paper's schedule) on the engine's epoch loop; adds the commitment
    loss when prepared."""
    x, y = data
    prepared = any(isinstance(m, (QATConv2d, QATLinear)) for m in model.modules())
    optimizer = torch.optim.SGD(
        param_groups(model, lr=lr, weight_decay=5e-4), lr=lr, momentum=0.9, nesterov=True
    )
    images = TensorDataset("digits", x, y, x[:0], y[:0], 10, (0.0,), (1.0,), augment=False)
    steps_per_epoch = images.steps_per_epoch(batch_size, world_size=1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        batches = images.train_epoch(
            epoch, batch_size=batch_size, seed=seed, rank=0, world_size=1, generator=generator
        )
        running = train_one_epoch(
            model,
            batches,
            optimizer=optimizer,
            schedule=schedule,
            loss_fn=qat_loss() if prepared else cross_entropy_loss,
            running=Running.zero(x.device),
        )
        summary = running.summary()
        bar.set_postfix(loss=f"{summary['train_loss']:.3f}", train_acc=f"{summary['train_acc']:.1f}")


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[Tensor, Tensor]) -> tuple[float, Tensor]:
    model.eval()
    logits = model(data[0])
    return 100.0 * float((logits.argmax(1) == data[1]).float().mean()), logits


def run_demo(config: DemoConfig | None = None) -> dict[str, Any]:
    """Run the whole demo and return its results as plain data."""
    config = DemoConfig() if config is None else config
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    x_train, y_train, x_test, y_test = load_digits_tensors(config.seed)
    train_data, test_data = (x_train, y_train), (x_test, y_test)
    model = DigitsCNN()
    common: dict[str, Any] = {
        "batch_size": config.batch_size,
        "seed": config.seed,
        "progress": config.progress,
    }
    train(model, train_data, epochs=config.float_epochs, lr=config.float_lr, desc="float", **common)
    float_acc, _ = evaluate(model, test_data)
    rows = [
        {
            "model": "float",
            "bits": "32/32",
            "accuracy": float_acc,
            "converted_accuracy": None,
            "size_kib": model_size_bits(model) / 8192,
            "max_abs_diff": None,
        }
    ]
    for bits in config.bits:
        prepared = prepare_adq(model, default_qconfig_mapping(bits), (x_train[:64],))
        train(
            prepared,
            train_data,
            epochs=config.qat_epochs,
            lr=config.qat_lr,
            desc=f"QAT W{bits}A{bits}",
            **common,
        )
        qat_acc, qat_logits = evaluate(prepared, test_data)
        converted = convert_adq(prepared, backend="reference")
        int_acc, int_logits = evaluate(converted, test_data)
        int8_acc = None
        if kernel_problem() is None:  # the integer model a CPU deployment runs
            int8 = convert_adq(prepared, backend="int8")
            int8_acc, _ = evaluate(int8, test_data)
        rows.append(
            {
                "model": "ADQ",
                "bits": f"{bits}/{bits}",
                "accuracy": qat_acc,
                "converted_accuracy": int_acc,
                "int8_accuracy": int8_acc,
                "int8_size_kib": None if int8_acc is None else model_size_bits(int8) / 8192,
                "size_kib": model_size_bits(converted) / 8192,
                "max_abs_diff": float((qat_logits - int_logits).abs().max()),
                "max_abs_logit": float(qat_logits.abs().max()),
            }
        )
    return {
        "config": asdict(config),
        "data": f"scikit-learn digits, {len(x_train)} train / {len(x_test)} test",
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "machine": machine_info(),
    }


def format_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | W/A bits | accuracy % | converted accuracy % | max |Δ| converted vs QAT | size KiB "
        "| int8 accuracy % | int8 size KiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        conv = "—" if row["converted_accuracy"] is None else f"{row['converted_accuracy']:.2f}"
        diff = "—" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}"
        int8 = "—" if row.get("int8_accuracy") is None else f"{row['int8_accuracy']:.2f}"
        int8_size = "—" if row.get("int8_size_kib") is None else f"{row['int8_size_kib']:.1f}"
        lines.append(
            f"| {row['model']} | {row['bits']} | {row['accuracy']:.2f} | {conv} | {diff} | "
            f"{row['size_kib']:.1f} | {int8} | {int8_size} |"
        )
    lines.append(f"\n{results['data']}; {describe(results['machine'])}; {results['seconds']:.1f} s")
    return "\n".join(lines)
