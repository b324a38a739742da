"""One training epoch and the losses it minimises: the loop `adq-fx train` and `adq-fx demo` share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import commitment_loss
from .distributed import unwrap
from .kd import distillation_loss
from .progress import Running

LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The float phase's loss (and the logits it came from)."""
    logits = model(x)
    return F.cross_entropy(logits.float(), y), logits


def qat_loss(
    teacher: nn.Module | None = None, *, temperature: float = 1.0, hard_weight: float = 0.0
) -> LossFn:
    """Cross-entropy, or N2UQ's distillation from a frozen ``teacher``, plus the eq. (3) commitment."""

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x)
        if teacher is None:
            task = F.cross_entropy(logits.float(), y)
        else:
            with torch.no_grad():
                target_logits = teacher(x)
            task = distillation_loss(
                logits, target_logits, y, temperature=temperature, hard_weight=hard_weight
            )
        return task + commitment_loss(unwrap(model)), logits

    return loss_fn


def train_one_epoch(
    step_model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    loss_fn: LossFn,
    running: Running,
    start_step: int = 0,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    prepare_input: Callable[[Tensor], Tensor] = lambda x: x,
    after_step: Callable[[int], None] | None = None,
) -> Running:
    """Forward, backward, optimizer and schedule step over ``batches``; ``after_step(position)`` runs
    after each (position counts from ``start_step + 1``) for logging, checkpoints and stops."""
    for position, (x, y) in enumerate(batches, start=start_step + 1):
        with autocast():
            loss, logits = loss_fn(step_model, prepare_input(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running.add(loss, logits, y)
        if after_step is not None:
            after_step(position)
    return running


__all__ = ["LossFn", "cross_entropy_loss", "qat_loss", "train_one_epoch"]
