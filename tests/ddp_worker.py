"""The per-rank body of tests/test_distributed.py (a module of its own so spawned processes import it)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adq_fx import (
    ADQConfig,
    CodebookWeightConfig,
    LSQActivationConfig,
    ThresholdActivationConfig,
    commitment_loss,
    default_qconfig_mapping,
    prepare_adq,
)
from adq_fx import functional as qf
from adq_fx.quantizers import LSQActivationQuantizer, ThresholdActivationQuantizer
from tests.models import TinyResNet, images

STEPS = 3


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = images(8, seed=3)
    return x, torch.arange(8) % 5


def prepared_model() -> nn.Module:
    """Same model on every rank; BatchNorm on running statistics, so a shard's batch statistics
    cannot differ from the full batch's (the comparison is about the quantizers). Thresholds start
    fixed: a data init averaged over ranks can differ from the full batch's in the last bit, and a
    threshold that moves by one ulp can flip a code (its averaging is checked on its own below)."""
    torch.manual_seed(0)
    fixed_start = ThresholdActivationConfig(bits=3, init="uniform")
    mapping = default_qconfig_mapping(3).set_global(
        ADQConfig(weight=CodebookWeightConfig(bits=3), activation=fixed_start)
    )
    prepared = prepare_adq(TinyResNet(), mapping, images(8))
    prepared.train()
    for m in prepared.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return prepared


def train(model: nn.Module, prepared: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(STEPS):
        loss = F.cross_entropy(model(x), y) + commitment_loss(prepared)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def codebooks(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone()
        for k, v in prepared.state_dict().items()
        if k.endswith(("codebook", "ema_counts", "ema_sums")) or k.endswith("weight")
    }


def rank_specific_update(prepared: nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """One EMA step on weights that differ per rank: only the all-reduce can make the results agree."""
    layer = copy.deepcopy(prepared.get_submodule("layer1.conv1"))
    quantizer = layer.weight_quantizer
    weight = layer.weight.detach() * (1.0 + 0.5 * rank)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in quantizer.state_dict().items()}
    normalised = qf.normalise(weight, quantizer.scale)
    quantizer.update_codebook(normalised, qf.nearest_codes(normalised, quantizer.codebook))
    return {"codebook": quantizer.codebook.clone(), "weight": weight, "before": before}


def lsq_first_batch(rank: int) -> torch.Tensor:
    quantizer = LSQActivationQuantizer(
        LSQActivationConfig(bits=3), signed=False, num_channels=3, channel_dim=1
    )
    quantizer(images(4, seed=10 + rank).abs())
    return quantizer.step.detach().clone()


def threshold_first_batch(rank: int) -> torch.Tensor:
    config = ThresholdActivationConfig(bits=3, init="first_batch")
    quantizer = ThresholdActivationQuantizer(config, signed=False, num_channels=3, channel_dim=1)
    quantizer(images(4, seed=10 + rank).abs())
    return quantizer.beta1.detach().clone()


def run(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        prepared = prepared_model()
        x, y = batch()
        shard = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
        train(DistributedDataParallel(prepared), prepared, x[shard], y[shard])
        result = {
            "trained": codebooks(prepared),
            "update": rank_specific_update(prepared, rank),
            "lsq_step": lsq_first_batch(rank),
            "threshold_beta1": threshold_first_batch(rank),
        }
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
