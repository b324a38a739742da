"""The per-rank body of the streaming DDP test (a module of its own so spawned processes import it)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from adq_fx.train.data import IMAGENET_MEAN, IMAGENET_STD
from adq_fx.train.engine import run_training
from adq_fx.train.streaming import StreamingImageFolder
from tests.image_folders import sample_ids, stream_config


def red_means(x: torch.Tensor) -> list[float]:
    """Each normalised image's mean red value back on the 0..255 scale."""
    red = x[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return (red.mean(dim=(1, 2)) * 255).tolist()


def run(rank: int, world_size: int, init_file: str, coloured: str, jpegs: str, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        data = StreamingImageFolder(coloured, image_size=16, workers=1)
        seen = {}
        for epoch in (0, 1):
            ids = []
            for x, _ in data.train_epoch(epoch, batch_size=8, seed=5, rank=rank, world_size=world_size):
                ids += sample_ids(red_means(x))
            seen[epoch] = ids
        config = stream_config(jpegs, Path(out_dir) / "run", workers=1, kernels="eager")
        results = run_training(config)
        torch.save(
            {"seen": seen, "converted": results["converted_accuracy"], "history": results["history"]},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
