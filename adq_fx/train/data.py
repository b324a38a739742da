"""Data sets as tensors held in memory (on the GPU when there is one), augmented in batches.

Small image sets (digits, CIFAR-10, a 32x32 ImageFolder such as the CIFAR-10
JPEG copy) are decoded once into uint8 tensors, cached next to the data, and
augmented on the device, so a GPU is never waiting on a data loader.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 images (or floats in [0, 1]) to normalised floats, on x's device."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    mean_t = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def folder_statistics(image_size: int, num_classes: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation of an ImageFolder tree: CIFAR-10's for 32x32 images in 10 classes (the JPEG
    copy), ImageNet's otherwise; both loaders use it, so a tree normalises alike in either."""
    if image_size == 32 and num_classes == 10:
        return CIFAR_MEAN, CIFAR_STD
    return IMAGENET_MEAN, IMAGENET_STD


def held_out_indices(labels: Tensor, count: int, num_classes: int) -> Tensor:
    """The last ``count / num_classes`` indices of each class: the validation split.

    "Last" in the data set's own order (file order in an ImageFolder, whose
    classes are contiguous), so the split is stratified and the same on every
    machine and run, whichever loader reads the images.
    """
    per_class, remainder = divmod(count, num_classes)
    if remainder or per_class == 0:
        raise ValueError(
            f"validation={count}: use a multiple of the {num_classes} classes, so "
            "every class gives the same number of images."
        )
    held = []
    for label in range(num_classes):
        members = (labels == label).nonzero().flatten()
        if len(members) <= per_class:
            raise ValueError(
                f"validation={count}: class {label} has only {len(members)} training "
                f"images, not more than the {per_class} to hold out."
            )
        held.append(members[-per_class:])
    return torch.cat(held)


def shard_range(size: int, shard: tuple[int, int]) -> range:
    """The contiguous part ``shard = (rank, world_size)`` of ``size`` items evaluates: ceil(size / world)
    each, the last ones shorter, so concatenating the parts in rank order restores the order."""
    rank, world = shard
    per_rank = -(-size // world)
    return range(min(size, rank * per_rank), min(size, (rank + 1) * per_rank))


def subset_indices(size: int, keep: int | None, generator: torch.Generator) -> Tensor | None:
    """A fixed random choice of ``keep`` of ``size`` items (short CPU schedules); None keeps all."""
    if keep is None or keep >= size:
        return None
    return torch.randperm(size, generator=generator)[:keep]


class TrainingData(Protocol):
    """What the engine reads from a data set; TensorDataset and StreamingImageFolder both offer it."""

    name: str
    num_classes: int
    augment: bool

    @property
    def in_channels(self) -> int: ...
    @property
    def train_size(self) -> int: ...
    @property
    def has_validation(self) -> bool: ...
    def hold_out(self, count: int) -> TrainingData: ...
    def subset(self, train: int | None, test: int | None, seed: int) -> TrainingData: ...
    def to(self, device: torch.device) -> TrainingData: ...
    def labels(self, split: str = "test") -> Tensor: ...
    def split_size(self, split: str) -> int: ...
    def batch_at(self, index: Tensor) -> tuple[Tensor, Tensor]: ...
    def test_batches(
        self, batch_size: int, split: str = "test", shard: tuple[int, int] = (0, 1)
    ) -> Iterator[tuple[Tensor, Tensor]]: ...
    def steps_per_epoch(self, batch_size: int, world_size: int) -> int: ...
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
    ) -> TrainEpoch: ...


class TrainEpoch:
    """One epoch's batches for this rank, its number of steps, and the state that resumes it mid-way."""

    def __init__(
        self, batches: Iterator[tuple[Tensor, Tensor]], *, steps: int, start_step: int, state: dict
    ) -> None:
        self.batches, self.steps, self.start_step, self.state = batches, steps, start_step, state

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.batches)


@dataclass
class TensorDataset:
    """Images as uint8 (N, C, H, W) or float, labels int64, plus how to normalise and augment."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop (pad 4) + horizontal flip, the CIFAR standard
    val_x: Tensor | None = None  # held out of train by hold_out(): where choices are made
    val_y: Tensor | None = None

    def to(self, device: torch.device) -> TensorDataset:
        for field in ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y"):
            value = getattr(self, field)
            if value is not None:
                setattr(self, field, value.to(device))
        return self

    def hold_out(self, count: int) -> TensorDataset:
        """Move the last ``count / classes`` training images of each class into the validation split."""
        if count <= 0:
            return self
        held_index = held_out_indices(self.train_y, count, self.num_classes)
        keep = torch.ones(len(self.train_y), dtype=torch.bool, device=self.train_y.device)
        keep[held_index] = False
        self.val_x, self.val_y = self.train_x[held_index], self.train_y[held_index]
        self.train_x, self.train_y = self.train_x[keep], self.train_y[keep]
        return self

    def subset(self, train: int | None, test: int | None, seed: int) -> TensorDataset:
        """A fixed random subset (for short CPU schedules); None keeps everything."""
        generator = torch.Generator().manual_seed(seed)
        keep = subset_indices(len(self.train_x), train, generator)
        if keep is not None:
            keep = keep.to(self.train_x.device)
            self.train_x, self.train_y = self.train_x[keep], self.train_y[keep]
        keep = subset_indices(len(self.test_x), test, generator)
        if keep is not None:
            keep = keep.to(self.test_x.device)
            self.test_x, self.test_y = self.test_x[keep], self.test_y[keep]
        return self

    def normalise(self, x: Tensor) -> Tensor:
        return normalise(x, self.mean, self.std)

    # -- what the engine reads (StreamingImageFolder offers the same) ------------
    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def train_size(self) -> int:
        return len(self.train_x)

    @property
    def has_validation(self) -> bool:
        return self.val_x is not None

    def labels(self, split: str = "test") -> Tensor:
        labels = self.test_y if split == "test" else self.val_y
        if labels is None:
            raise ValueError("no validation split: set TrainConfig(validation=N) to hold one out of train.")
        return labels

    def split_size(self, split: str) -> int:
        x = self.test_x if split == "test" else self.val_x
        return 0 if x is None else len(x)

    def batch_at(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised training images at ``index``, not augmented (sensitivities, example inputs)."""
        return self.train_batch(index.to(self.train_x.device), None)

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        return (len(self.train_x) + batch_size - 1) // batch_size

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
        """One epoch: a shuffle of the whole set from ``generator``, cut into global batches of which
        this rank takes a strided share; ``state`` (the epoch's order) resumes it at ``start_step``."""
        order = state["order"] if state else torch.randperm(len(self.train_x), generator=generator)
        steps = self.steps_per_epoch(batch_size, world_size)

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            for first in range(start_step * batch_size, len(order), batch_size):
                index = order[first : first + batch_size][rank::world_size].to(self.train_x.device)
                yield self.train_batch(index, generator)

        return TrainEpoch(batches(), steps=steps, start_step=start_step, state={"order": order})

    def train_batch(self, index: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        x = self.normalise(self.train_x[index])
        if self.augment:
            x = random_crop_flip(x, padding=4, generator=generator)
        return x, self.train_y[index]

    def test_batches(
        self, batch_size: int, split: str = "test", shard: tuple[int, int] = (0, 1)
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalised (x, y) batches of the test split, or of the validation split (``split="val"``);
        ``shard = (rank, world_size)`` keeps that rank's contiguous part (shard_range)."""
        x, y = (self.test_x, self.test_y) if split == "test" else (self.val_x, self.val_y)
        if x is None or y is None:
            raise ValueError("no validation split: set TrainConfig(validation=N) to hold one out of train.")
        part = shard_range(len(x), shard)
        for start in range(part.start, part.stop, batch_size):
            end = min(start + batch_size, part.stop)
            yield self.normalise(x[start:end]), y[start:end]


def random_crop_flip(x: Tensor, *, padding: int, generator: torch.Generator | None) -> Tensor:
    """Per-image random crop from a zero-padded copy and random horizontal flip, batched."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = dx.view(n, 1) + torch.arange(w, device=x.device)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def load_digits_tensors(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits as (N, 1, 8, 8) floats in [0, 1]; stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )

    def to_x(a: Any) -> Tensor:
        return torch.tensor(a, dtype=torch.float32).unsqueeze(1) / 16.0

    return to_x(x_train), torch.tensor(y_train), to_x(x_test), torch.tensor(y_test)


def load_digits_dataset(seed: int = 0) -> TensorDataset:
    """scikit-learn's bundled 8x8 digits (the embedded default; no download)."""
    x_train, y_train, x_test, y_test = load_digits_tensors(seed)
    return TensorDataset("digits", x_train, y_train, x_test, y_test, 10, (0.0,), (1.0,), augment=False)


def load_cifar10(root: str | Path, *, download: bool = False) -> TensorDataset:
    """CIFAR-10 in torchvision's own format under ``root`` (downloads only if asked)."""
    from torchvision.datasets import CIFAR10

    train = CIFAR10(str(root), train=True, download=download)
    test = CIFAR10(str(root), train=False, download=download)

    def to_tensor(ds: CIFAR10) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    (xtr, ytr), (xte, yte) = to_tensor(train), to_tensor(test)
    return TensorDataset("cifar10", xtr, ytr, xte, yte, 10, CIFAR_MEAN, CIFAR_STD, augment=True)


def load_image_folder(root: str | Path, *, image_size: int = 32) -> TensorDataset:
    """An ImageFolder tree with train/ and test/ (or val/) splits, decoded once and cached.

    The CIFAR-10 JPEG copy is one. Images are resized to ``image_size`` if they
    differ; the uint8 cache is written to ``root/.adq_fx_cache_<size>_<hash>.pt``.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor, resize

    root = Path(root)
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    if not (root / "train").is_dir() or not test_dir.is_dir():
        raise FileNotFoundError(f"{root} needs train/ and test/ (or val/) class folders, ImageFolder style.")
    key = hashlib.sha1(f"{root.resolve()}:{image_size}".encode()).hexdigest()[:10]
    cache = root / f".adq_fx_cache_{image_size}_{key}.pt"
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
    else:
        blob = {}
        for split, folder in (("train", root / "train"), ("test", test_dir)):
            images = ImageFolder(str(folder))
            xs = []
            for path, _ in images.samples:
                img = pil_to_tensor(images.loader(path))
                if img.shape[-1] != image_size or img.shape[-2] != image_size:
                    img = resize(img, [image_size, image_size], antialias=True)
                xs.append(img)
            blob[split] = (torch.stack(xs), torch.tensor(images.targets), images.classes)
        try:
            torch.save(blob, cache)
        except OSError as err:
            warnings.warn(
                f"could not write the decoded-image cache {cache} ({err}); "
                "the images will be decoded again next time.",
                stacklevel=2,
            )
    (xtr, ytr, classes), (xte, yte, _) = blob["train"], blob["test"]
    mean, std = folder_statistics(image_size, len(classes))
    return TensorDataset(
        f"imagefolder:{root.name}", xtr, ytr, xte, yte, len(classes), mean, std, augment=True
    )


def load_dataset(
    spec: str,
    *,
    download: bool = False,
    image_size: int = 32,
    loader: str = "memory",
    workers: int = 0,
) -> TrainingData:
    """'digits', 'cifar10:<root>' or 'imagefolder:<root>': a TensorDataset, or for an ImageFolder read
    through DataLoader workers (``loader="stream"``, or "auto" on a large tree) a StreamingImageFolder."""
    kind, _, where = spec.partition(":")
    if kind == "imagefolder" and where:
        from .streaming import StreamingImageFolder, should_stream

        if loader == "stream" or (loader == "auto" and should_stream(where, image_size)):
            return StreamingImageFolder(where, image_size=image_size, workers=workers)
        return load_image_folder(where, image_size=image_size)
    if loader == "stream":
        raise ValueError(
            f"loader='stream' reads an ImageFolder tree; {spec!r} is held in memory. Use loader='memory' "
            "(or 'auto'), or point --dataset at imagefolder:<root>."
        )
    if kind == "digits":
        return load_digits_dataset()
    if kind == "cifar10" and where:
        return load_cifar10(where, download=download)
    raise ValueError(f"unknown dataset {spec!r}: use 'digits', 'cifar10:<root>' or 'imagefolder:<root>'.")
