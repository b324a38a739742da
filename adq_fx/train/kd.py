"""Knowledge distillation as N2UQ does it: soft cross-entropy against a frozen teacher."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor | None = None,
    *,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
) -> Tensor:
    """mean_batch(-Σ softmax(t/T) · log_softmax(s/T)) · T², mixed with hard-label CE.

    N2UQ's defaults: temperature 1, no hard-label term. The T² factor keeps the
    gradient scale independent of T (Hinton et al.).
    """
    if temperature <= 0:
        raise ValueError(f"distillation_loss(temperature={temperature}) must be positive.")
    if not 0.0 <= hard_weight <= 1.0:
        raise ValueError(f"distillation_loss(hard_weight={hard_weight}) must lie in [0, 1].")
    soft_targets = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    soft = -(soft_targets * log_probs).sum(dim=1).mean() * temperature**2
    if hard_weight == 0.0:
        return soft
    if targets is None:
        raise ValueError("distillation_loss(hard_weight > 0) needs the hard targets.")
    return (1 - hard_weight) * soft + hard_weight * F.cross_entropy(student_logits.float(), targets)
