"""Where a training phase stands: the checkpoint that resumes it (mid-epoch too) and its running metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..summary import quantization_map


class Running:
    """An epoch's running loss and accuracy as device tensors (no host sync per step) and its pace."""

    def __init__(self, seen: int, correct: Tensor, loss_sum: Tensor, seconds_before: float = 0.0) -> None:
        self.seen, self.correct, self.loss_sum = seen, correct, loss_sum
        self.seconds_before = seconds_before  # time spent on this epoch before a resume
        self.started, self.seen_at_start = time.perf_counter(), seen

    @classmethod
    def zero(cls, device: torch.device) -> Running:
        return cls(0, torch.zeros((), dtype=torch.long, device=device), torch.zeros((), device=device))

    def add(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        self.seen += len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.loss_sum += loss.detach() * len(labels)

    def recent_loss(self) -> float:
        return float(self.loss_sum) / max(1, self.seen)

    def images_per_second(self) -> float:
        """This rank's images per second since the epoch began (or resumed) in this process."""
        return (self.seen - self.seen_at_start) / max(1e-9, time.perf_counter() - self.started)

    def summary(self) -> dict[str, float]:
        return {
            "train_loss": float(self.loss_sum) / max(1, self.seen),
            "train_acc": 100.0 * float(self.correct) / max(1, self.seen),
        }

    def state_dict(self) -> dict[str, Any]:
        elapsed = self.seconds_before + time.perf_counter() - self.started
        return {"seen": self.seen, "correct": self.correct, "loss_sum": self.loss_sum, "seconds": elapsed}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> Running:
        correct, loss_sum = state["correct"].to(device), state["loss_sum"].to(device)
        return cls(int(state["seen"]), correct, loss_sum, float(state["seconds"]))


class Progress:
    """A phase's position (epoch, step within it), history and mid-epoch state, saved atomically.

    A checkpoint written at an epoch's end resumes at step 0 of the next one; one
    written every ``checkpoint_every`` steps also holds the epoch's sample order
    and running metrics, so resuming neither repeats nor skips a batch.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.epoch, self.step = 0, 0
        self.epoch_state: dict[str, Tensor] | None = None
        self.running: Running | None = None
        self.history: list[dict] = []

    def restore(self, model: nn.Module, optimizer: Any, schedule: Any, generator: torch.Generator) -> None:
        state = torch.load(self.path, weights_only=True, map_location="cpu")
        if "quantizers" in state:  # checkpoints before it could not be checked
            now = json.loads(json.dumps(quantizer_settings(model)))  # as saved: tuples become lists
            _check_same_quantizers(self.path, json.loads(state["quantizers"]), now)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.history = state["history"]
        if "next" in state:
            self.epoch, self.step = (int(v) for v in state["next"])
        else:  # written before mid-epoch checkpoints: always at an epoch's end
            self.epoch, self.step = state["epoch"] + 1, 0
        self.epoch_state = state.get("epoch_state")
        running = state.get("running")
        device = next(model.parameters()).device
        self.running = Running.from_state(running, device) if running is not None else None

    def save(
        self,
        model: nn.Module,
        optimizer: Any,
        schedule: Any,
        generator: torch.Generator,
        next_position: tuple[int, int],
        epoch_state: dict[str, Tensor] | None,
        running: Running | None,
    ) -> None:
        """Write the checkpoint that resumes at ``next_position`` (epoch, steps done in it)."""
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "epoch": next_position[0] - 1,  # the last finished epoch, as checkpoints before "next" held
            "next": list(next_position),
            "epoch_state": epoch_state,
            "running": None if running is None else running.state_dict(),
            "quantizers": json.dumps(quantizer_settings(model)),
        }
        partial = self.path.with_suffix(".partial")
        torch.save(state, partial)
        partial.replace(self.path)  # atomic: a job killed while saving keeps the previous checkpoint


def quantizer_settings(model: nn.Module) -> dict[str, Any]:
    """Each quantized layer's bits and quantizer configs ({} for a float model): what a resume must match."""
    try:
        saved = quantization_map(model)
    except ValueError:  # no quantized layer: the float phase
        return {}
    kept = ("weight_bits", "activation_bits", "weight_config", "activation_config")
    return {name: {key: entry.get(key) for key in kept} for name, entry in saved.items()}


def _check_same_quantizers(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint into quantizers configured otherwise (a changed flag or default)."""
    for name in sorted(set(saved) | set(current)):
        was, now = saved.get(name), current.get(name)
        if was == now:
            continue
        if was is None or now is None:
            detail = (
                f"layer {name!r} is quantized in {'the run now' if was is None else 'the checkpoint'} only"
            )
        else:
            field, before, after = next(_differences(was, now))
            detail = f"layer {name!r} {field} is {before!r} in the checkpoint and {after!r} now"
        raise ValueError(
            f"{path}: {detail}. Resume with the settings the run started with (its results.json or "
            "job config; a default may have changed since, e.g. --commitment-units channel or "
            "--bit-allocation eq9), or start a new --out-dir."
        )


def _differences(
    was: dict[str, Any], now: dict[str, Any], prefix: str = ""
) -> Iterator[tuple[str, Any, Any]]:
    for key in sorted(set(was) | set(now)):
        a, b = was.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}", a, b


__all__ = ["Progress", "Running", "quantizer_settings"]
