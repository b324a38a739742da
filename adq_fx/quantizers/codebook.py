"""ADQ weight quantizer: per-channel scale, learned codebook, EMA k-means (eqs. 2-7)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as qf
from ..config import CodebookWeightConfig
from ..int8.grid import snap_to_training_grid
from ..registry import register_quantizer
from ._distributed import all_reduce_mean_
from .base import WeightQuantizer


@register_quantizer(CodebookWeightConfig)
class CodebookWeightQuantizer(WeightQuantizer):
    """Holds one layer's codebook and EMA statistics; the math is in ``functional``.

    The per-channel scale is the RMS of the pre-trained weights, fixed at
    prepare time: the codebook then lives in one stable coordinate system, so
    the EMA averages over steps are consistent, and the converted model stores
    exactly the scale the model was trained with.
    """

    scale: Tensor
    codebook: Tensor
    ema_counts: Tensor
    ema_sums: Tensor

    def __init__(self, config: CodebookWeightConfig, weight: Tensor) -> None:
        super().__init__()
        self.config = config
        scale = qf.per_channel_rms(weight)
        normalised = qf.normalise(weight.detach().float(), scale)
        if config.init == "quantile":
            codebook = qf.quantile_codebook(normalised, config.bits, full_levels=config.levels == "full")
            if config.kmeans_init_steps:  # refine the quantiles on the weights (not a random init)
                codebook = qf.lloyd_codebook(
                    normalised, codebook, config.kmeans_init_steps, pin_zero=bool(config.pin_zero)
                )
        else:
            codebook = qf.normal_codebook(config.num_levels, pin_zero=bool(config.pin_zero), seed=config.seed)
        if config.int8_grid:
            codebook = snap_to_training_grid(codebook)
        # Warm start: as if every entry had been seen with an equal share of the
        # weights, so the first EMA steps move the codebook smoothly from its init;
        # without it the statistics start at zero and step one jumps to the cluster means.
        occupancy = normalised.numel() / config.num_levels if config.warm_start else 0.0
        counts = torch.full_like(codebook, occupancy)
        device = weight.device
        self.register_buffer("scale", scale.to(device))
        self.register_buffer("codebook", codebook.to(device))
        self.register_buffer("ema_counts", counts.to(device))
        self.register_buffer("ema_sums", (codebook * counts).to(device))

    def extra_repr(self) -> str:
        c = self.config
        return f"bits={c.bits}, levels={self.codebook.numel()}, learn_codebook={c.learn_codebook}"

    def codes(self, weight: Tensor) -> Tensor:
        """Index of each weight's codebook entry (the assignment both QAT and LUT use)."""
        return qf.nearest_codes(qf.normalise(weight, self.scale), self.codebook)

    def levels(self) -> Tensor:
        return self.codebook

    def channel_scale(self, weight: Tensor) -> Tensor:
        return self.scale

    def forward(self, weight: Tensor) -> Tensor:
        return self.quantize(weight)[0]

    def quantize(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(quantized weight, beta * eq. (3) of this assignment; 0 in eval), then the EMA step."""
        learn = self.training and self.config.learn_codebook
        quantized, commitment, step_counts, step_sums = qf.codebook_quantize(
            weight,
            self.scale,
            self.codebook,
            with_commitment=self.training,
            with_statistics=learn,
            commitment_weights=self._commitment_weights(),
        )
        if learn:
            self.apply_statistics(step_counts, step_sums)
        return quantized, self.config.commitment_beta * commitment

    @torch.no_grad()
    def update_codebook(self, weight_normalised: Tensor, codes: Tensor) -> None:
        """One EMA k-means step (eqs. 5-7) for this assignment, in place, like BatchNorm's running stats."""
        self.apply_statistics(*qf.cluster_statistics(weight_normalised, codes, self.codebook.numel()))

    @torch.no_grad()
    def apply_statistics(self, step_counts: Tensor, step_sums: Tensor) -> None:
        """The EMA step from one step's cluster statistics (counts and sums per entry).

        Under DDP the statistics are averaged over ranks first, so every rank
        applies the same update and holds the same codebook.
        """
        all_reduce_mean_(step_counts, step_sums)
        codebook, counts, sums = qf.ema_kmeans_step(
            self.codebook,
            self.ema_counts,
            self.ema_sums,
            step_counts,
            step_sums,
            decay=self.config.ema_decay,
            eps=self.config.eps,
            pin_zero=self.config.pin_zero,
        )
        # On the int8 grid only the codebook in use is snapped: the EMA statistics stay continuous,
        # so moves smaller than one grid step still accumulate.
        self.codebook.copy_(snap_to_training_grid(codebook) if self.config.int8_grid else codebook)
        self.ema_counts.copy_(counts)
        self.ema_sums.copy_(sums)

    def commitment(self, weight: Tensor) -> Tensor:
        """Eq. (3) as a mean over the layer's weights, afresh: beta * mean((sg(ŵ') - w')^2).

        A mean, not a sum, keeps beta independent of layer size. The gradient
        reaches the weights only: the codebook is a buffer moved by the EMA. In
        training, ``quantize`` returns the same term from its own search, which
        is what commitment_loss uses.
        """
        _, term, _, _ = qf.codebook_quantize(
            weight, self.scale, self.codebook, commitment_weights=self._commitment_weights()
        )
        return self.config.commitment_beta * term

    def _commitment_weights(self) -> Tensor | None:
        """Per-channel weights of the commitment's mean; None is eq. (3) on w / s_c as written."""
        return qf.layer_commitment_weights(self.scale) if self.config.commitment_units == "layer" else None
