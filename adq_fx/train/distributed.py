"""DDP under torchrun: set-up, batch sharding and rank-0-only side effects.

``torchrun --nproc_per_node N -m adq_fx train ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; each rank trains on its share of every global batch (the data's
``train_epoch`` cuts it), so N ranks see what one process sees with the same
--batch-size. Quantizer state is kept equal across ranks by the quantizers
themselves (see adq_fx.quantizers._distributed).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True, kw_only=True)
class Distributed:
    """This process's place in the job; world_size 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # we created the process group, so we destroy it at the end

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first, the others after it: one download or cache write, not N."""
        if self.enabled and not self.is_main:
            dist.barrier()
        try:
            yield
        finally:
            if self.enabled and self.is_main:
                dist.barrier()

    def gather(self, part: Tensor, total: int, device: torch.device) -> Tensor:
        """Every rank's contiguous part of ``total`` items (data.shard_range), concatenated in rank
        order on every rank; ``device`` is where the collective runs (the GPU under NCCL)."""
        if not self.enabled:
            return part
        per_rank = -(-total // self.world_size)
        padded = part.new_zeros((per_rank, *part.shape[1:]), device=device)
        padded[: len(part)] = part.to(device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat(parts)[:total].to(part.device)

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics move with each rank's own shard), so
        all ranks evaluate, convert and save one model."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_from_environment(device_setting: str) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device_setting == "auto" else device_setting.startswith("cuda")
    if world_size == 1:
        return Distributed(), torch.device(
            "cuda" if use_cuda else "cpu"
        ) if device_setting == "auto" else torch.device(device_setting)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return Distributed(rank=int(os.environ["RANK"]), world_size=world_size, owns_group=owns_group), device


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE); 1 outside torchrun."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under DDP and torch.compile wrappers."""
    while isinstance(model, DistributedDataParallel) or hasattr(model, "_orig_mod"):
        if isinstance(model, DistributedDataParallel):
            model = model.module
        else:
            model = cast(nn.Module, model._orig_mod)
    return model
