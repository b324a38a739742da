"""ImageFolder data streamed through DataLoader workers, for sets too large to hold in memory (ImageNet).

Workers decode JPEGs and apply torchvision's standard ImageNet transforms
(RandomResizedCrop + flip for training; Resize + CenterCrop for evaluation)
and hand uint8 tensors to pinned memory; normalisation runs on the device in
batches, as on the in-memory path, so a worker never does float work.

Two properties make resume exact: the sample order is a ``DistributedSampler``
permutation of (seed, epoch) that can start part-way through an epoch, and each
sample's augmentation is seeded by (seed, epoch, index), so it does not depend
on which worker decodes it or on how many batches ran before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .data import (
    TrainEpoch,
    folder_statistics,
    held_out_indices,
    normalise,
    shard_range,
    subset_indices,
)

STREAM_ABOVE_BYTES = 4 << 30  # loader="auto": stream when the decoded uint8 images would exceed this
EVAL_RESIZE_RATIO = 256 / 224  # the standard ImageNet evaluation: resize to 256, centre crop 224
MAX_AUTO_WORKERS = 8


def train_transform(size: int) -> Any:
    """RandomResizedCrop(size) + horizontal flip on the PIL image, then a uint8 (C, H, W) tensor."""
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()]
    )


def eval_transform(size: int) -> Any:
    """Resize the short side to size·256/224, centre-crop size: the standard ImageNet evaluation."""
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.Resize(round(size * EVAL_RESIZE_RATIO), antialias=True), v2.CenterCrop(size), v2.PILToTensor()]
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """One augmentation seed per (run, epoch, sample): independent of worker and batch position."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class ImageSamples(Dataset):
    """(path, label) pairs decoded on access; a key ``(index, epoch)`` seeds the augmentation."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Any, *, seed: int = 0) -> None:
        from torchvision.datasets.folder import default_loader

        self.samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.loader = default_loader  # PIL (or accimage), as ImageFolder decodes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        image = self.loader(path)
        if epoch is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):  # the caller's RNG is left as it was
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image), label


class ResumableSampler(DistributedSampler):
    """DistributedSampler that yields ``(index, epoch)`` and can begin ``start`` samples into its epoch.

    With one process it is a seeded shuffle; under torchrun each rank gets its
    strided share (padded by at most world_size - 1 repeats, as DistributedSampler does).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())[self.start :]
        return iter([(index, self.epoch) for index in indices])

    def __len__(self) -> int:
        return super().__len__() - self.start


def default_workers(local_world_size: int) -> int:
    """The CPU cores this process may use, shared among the ranks on this node, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_AUTO_WORKERS, cores // max(1, local_world_size) - 1))


class StreamingImageFolder:
    """An ImageFolder tree (train/ and test/ or val/) read batch by batch through DataLoader workers.

    Offers what the engine asks of a data set (see TensorDataset): sizes and labels
    without decoding, normalised batches on the device, and resumable training epochs.
    """

    augment = True

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: int = 224,
        workers: int = 0,
        device: torch.device | None = None,
    ) -> None:
        from torchvision.datasets import ImageFolder

        root = Path(root)
        test_dir = root / "test" if (root / "test").is_dir() else root / "val"
        if not (root / "train").is_dir() or not test_dir.is_dir():
            raise FileNotFoundError(
                f"{root} needs train/ and test/ (or val/) class folders, ImageFolder style."
            )
        train, test = ImageFolder(str(root / "train")), ImageFolder(str(test_dir))
        if train.classes != test.classes:
            raise ValueError(
                f"{root}: train/ has classes {train.classes[:5]}..., {test_dir.name}/ has "
                f"{test.classes[:5]}...; both splits need the same class folders."
            )
        self.name = f"imagefolder:{root.name}"
        self.num_classes = len(train.classes)
        self.in_channels = 3
        self.image_size = image_size
        self.mean, self.std = folder_statistics(image_size, self.num_classes)
        self.workers = workers
        self.device = device or torch.device("cpu")
        self.train_samples: list[tuple[str, int]] = list(train.samples)
        self.test_samples: list[tuple[str, int]] = list(test.samples)
        self.val_samples: list[tuple[str, int]] | None = None

    # -- splits (the same rules as TensorDataset) --------------------------------
    def hold_out(self, count: int) -> StreamingImageFolder:
        """The last count / classes training images of each class become the validation split."""
        if count <= 0:
            return self
        held = set(held_out_indices(self.train_labels(), count, self.num_classes).tolist())
        self.val_samples = [s for i, s in enumerate(self.train_samples) if i in held]
        self.train_samples = [s for i, s in enumerate(self.train_samples) if i not in held]
        return self

    def subset(self, train: int | None, test: int | None, seed: int) -> StreamingImageFolder:
        generator = torch.Generator().manual_seed(seed)
        keep = subset_indices(len(self.train_samples), train, generator)
        if keep is not None:
            self.train_samples = [self.train_samples[i] for i in keep.tolist()]
        keep = subset_indices(len(self.test_samples), test, generator)
        if keep is not None:
            self.test_samples = [self.test_samples[i] for i in keep.tolist()]
        return self

    def to(self, device: torch.device) -> StreamingImageFolder:
        self.device = device
        return self

    # -- what the engine reads ----------------------------------------------------
    @property
    def train_size(self) -> int:
        return len(self.train_samples)

    @property
    def has_validation(self) -> bool:
        return self.val_samples is not None

    def _split(self, split: str) -> list[tuple[str, int]]:
        if split == "test":
            return self.test_samples
        if self.val_samples is None:
            raise ValueError("no validation split: set TrainConfig(validation=N) to hold one out of train.")
        return self.val_samples

    def train_labels(self) -> Tensor:
        return torch.tensor([label for _, label in self.train_samples])

    def labels(self, split: str = "test") -> Tensor:
        return torch.tensor([label for _, label in self._split(split)])

    def split_size(self, split: str) -> int:
        return 0 if split == "val" and self.val_samples is None else len(self._split(split))

    def normalise(self, x: Tensor) -> Tensor:
        return normalise(x, self.mean, self.std)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Any = None) -> DataLoader:
        workers = self.workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )

    def _on_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        blocking = self.device.type != "cuda"
        return self.normalise(x.to(self.device, non_blocking=not blocking)), y.to(self.device)

    def batch_at(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Training images at ``index`` under the evaluation transform (sensitivities, example inputs)."""
        dataset = ImageSamples(self.train_samples, eval_transform(self.image_size))
        images, labels = zip(*(dataset[int(i)] for i in index), strict=True)
        return self._on_device(torch.stack(images), torch.tensor(labels))

    def test_batches(
        self, batch_size: int, split: str = "test", shard: tuple[int, int] = (0, 1)
    ) -> Iterator[tuple[Tensor, Tensor]]:
        samples = self._split(split)
        part = shard_range(len(samples), shard)
        dataset = ImageSamples(samples[part.start : part.stop], eval_transform(self.image_size))
        for x, y in self._loader(dataset, batch_size):
            yield self._on_device(x, y)

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        per_rank = batch_size // world_size
        per_rank_samples = (len(self.train_samples) + world_size - 1) // world_size
        return (per_rank_samples + per_rank - 1) // per_rank

    def train_epoch(
        self,
        epoch: int,
        *,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        start_step: int = 0,
        state: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> TrainEpoch:
        """This rank's batches of one epoch, from ``start_step`` on; ``batch_size`` is the global batch."""
        if batch_size % world_size:
            raise ValueError(
                f"batch_size={batch_size} must divide among the {world_size} ranks: the streaming "
                "loader gives each rank batch_size / world_size images per step."
            )
        per_rank = batch_size // world_size
        dataset = ImageSamples(self.train_samples, train_transform(self.image_size), seed=seed)
        sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
        steps = self.steps_per_epoch(batch_size, world_size)
        sampler.start = start_step * per_rank
        batches = (self._on_device(x, y) for x, y in self._loader(dataset, per_rank, sampler))
        return TrainEpoch(batches, steps=steps, start_step=start_step, state={})


def should_stream(root: str | Path, image_size: int) -> bool:
    """loader="auto": stream when train + test decoded at ``image_size`` would exceed STREAM_ABOVE_BYTES."""
    root = Path(root)
    count = sum(1 for path in root.rglob("*") if path.is_file())
    return count * 3 * image_size * image_size > STREAM_ABOVE_BYTES


__all__ = [
    "STREAM_ABOVE_BYTES",
    "ImageSamples",
    "ResumableSampler",
    "StreamingImageFolder",
    "default_workers",
    "eval_transform",
    "should_stream",
    "train_transform",
]
