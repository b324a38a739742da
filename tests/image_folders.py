"""Small ImageFolder trees the streaming tests write (JPEGs of several sizes, some identifiable by
colour) and the short streamed run they train on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from adq_fx.train.config import TrainConfig

SIZES = ((40, 30), (64, 48), (50, 50), (33, 61))  # (width, height): the loader must not assume one size


def write_jpeg_folder(
    root: Path, *, classes: int = 3, train: int = 80, test: int = 20, seed: int = 0
) -> Path:
    """root/train/<class>/*.jpg and root/test/<class>/*.jpg with random content."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                width, height = SIZES[i % len(SIZES)]
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                pixels[..., label % 3] //= 2  # a class signal a small net can pick up
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return root


COLOUR_STEP, COLOUR_START = 3, 10  # the red value of sample i is COLOUR_START + COLOUR_STEP * i


def write_coloured_folder(root: Path, *, count: int = 80, classes: int = 2) -> Path:
    """Solid-colour JPEGs whose red value names the sample: crops and resizes of a flat image stay flat,
    so the loader's output says which file it came from."""
    for split, n in (("train", count), ("test", classes * 2)):
        for i in range(n):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            width, height = SIZES[i % len(SIZES)]
            colour = (COLOUR_START + COLOUR_STEP * i, 128, 64)
            Image.new("RGB", (width, height), colour).save(folder / f"{i:04d}.jpg", quality=95)
    return root


def sample_ids(batch_uint8_red_means: list[float]) -> list[int]:
    """The sample numbers of images from write_coloured_folder, from their mean red value (0..255)."""
    return [round((value - COLOUR_START) / COLOUR_STEP) for value in batch_uint8_red_means]


def stream_config(root: Path | str, out: Path | str, **overrides: object) -> TrainConfig:
    """A few CPU seconds of float and QAT training on a tree, read by the streaming loader."""
    settings = dict(
        dataset=f"imagefolder:{root}",
        loader="stream",
        workers=0,
        model="resnet20",
        image_size=8,
        train_subset=48,
        test_subset=12,
        float_epochs=1,
        epochs=1,
        batch_size=16,
        out_dir=str(out),
        progress=False,
        plots=False,
        device="cpu",
    )
    return TrainConfig(**{**settings, **overrides})
