"""Images per second the streaming loader decodes and augments, per worker, on ImageNet-sized JPEGs.

Writes benchmarks/results/loader_throughput.json. The JPEGs are made here
(nothing downloads): smooth random scenes with texture, 500x375 as the most
common ImageNet size, at JPEG quality 90; their mean file size is recorded to
compare with ImageNet's. Each setting (transform x worker count) runs through
``StreamingImageFolder.train_epoch`` / ``test_batches``, as training does,
after a warm-up, interleaved over repeats, median kept. A node's need follows:
workers = ranks x (a GPU's training images/s) / (one worker's images/s); pass
``--gpu-images-per-second`` with a QAT throughput measured on the GPU to get it.

    python benchmarks/loader_throughput.py [--images 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _runner import RESULTS, record, write_json
from PIL import Image

WIDTH, HEIGHT = 500, 375  # ImageNet's most common training image size


def write_scenes(root: Path, count: int, *, classes: int = 4, seed: int = 0) -> float:
    """train/ and test/ trees of smooth, textured JPEGs; returns their mean size in KiB."""
    rng = np.random.default_rng(seed)
    sizes = []
    for split, n in (("train", max(classes, count)), ("test", max(classes, count // 4))):
        for i in range(n):
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # a few colour regions ...
            scene = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BICUBIC)
            noise = rng.normal(0, 12, (HEIGHT, WIDTH, 3))  # ... with texture on top
            pixels = np.clip(np.asarray(scene, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i:05d}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            sizes.append(path.stat().st_size)
    return statistics.mean(sizes) / 1024


def images_per_second(root: Path, transform: str, workers: int, batch: int, size: int) -> float:
    """One pass over the split through the loader, as the engine reads it."""
    from adq_fx.train.streaming import StreamingImageFolder

    data = StreamingImageFolder(root, image_size=size, workers=workers)
    began = time.perf_counter()
    if transform == "train":
        count = 0
        for x, _ in data.train_epoch(0, batch_size=batch, seed=0, rank=0, world_size=1):
            count += len(x)
    else:
        count = sum(len(x) for x, _ in data.test_batches(batch))
    return count / (time.perf_counter() - began)


def markdown(data: dict[str, Any]) -> str:
    """The table docs/results.md and the README show (benchmarks/results_page.py)."""
    from adq_fx.environment import describe
    from adq_fx.train.streaming import MAX_AUTO_WORKERS

    settings = data["settings"]
    jpeg = settings["jpeg"]
    lines = [
        "| transform | loader workers | images/s | per worker |",
        "|---|---|---|---|",
    ]
    for row in data["rows"]:
        workers = row["workers"] or "none (in the training process)"
        lines.append(
            f"| {row['transform']} | {workers} | {row['images_per_second']:.0f} | {row['per_worker']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Synthetic {jpeg['width']}x{jpeg['height']} JPEGs (quality {jpeg['quality']}, mean "
        f"{jpeg['mean_kib']:.0f} KiB), {settings['train_images']} training images, crops of "
        f"{settings['image_size']}, batches of {settings['batch_size']}, median of {settings['repeats']} "
        f"interleaved passes; {describe(data['machine'])}."
    )
    one = next((r for r in data["rows"] if r["transform"] == "train" and r["workers"] == 1), None)
    if one is not None:
        lines.append(
            f"One worker decodes and augments {one['per_worker']:.0f} training images/s, so the default "
            f"{MAX_AUTO_WORKERS} workers per rank feed about {MAX_AUTO_WORKERS * one['per_worker']:.0f} "
            "images/s to each "
            "GPU where the node has a free core per worker (scaling past this machine's cores is not "
            "measured here); ImageNet's JPEGs are larger on average than these and decode more slowly."
        )
    advice = data.get("advice")
    if advice:
        lines.append(
            f"{advice['gpus']} GPUs at {advice['gpu_images_per_second']:.0f} images/s each need "
            f"{advice['workers']:.0f} workers at this per-worker rate."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="training JPEGs to write (test: a quarter)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-images-per-second", type=float, help="a GPU's QAT images/s, for the advice")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--out", default=str(RESULTS / "loader_throughput.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # the main process only batches and normalises here
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mean_kib = write_scenes(root, args.images)
        settings = [(t, w) for t in ("train", "eval") for w in args.workers]
        for transform, workers in settings:  # warm-up: imports, page cache
            images_per_second(root, transform, workers, args.batch_size, args.image_size)
        times: dict[tuple[str, int], list[float]] = {s: [] for s in settings}
        for _ in range(args.repeats):
            for transform, workers in settings:
                rate = images_per_second(root, transform, workers, args.batch_size, args.image_size)
                times[(transform, workers)].append(rate)

    rows = []
    for (transform, workers), rates in times.items():
        median = statistics.median(rates)
        rows.append(
            {
                "transform": transform,
                "workers": workers,
                "images_per_second": median,
                "per_worker": median / workers if workers else median,
                "repeats": rates,
            }
        )
        label = f"{workers} workers" if workers else "in process"
        print(f"{transform:5s} {label:12s} {median:8.1f} images/s")
    one_worker = next((r for r in rows if r["transform"] == "train" and r["workers"] == 1), None)
    advice = None
    if one_worker is not None and args.gpu_images_per_second:
        need = args.gpus * args.gpu_images_per_second / one_worker["per_worker"]
        advice = {"gpus": args.gpus, "gpu_images_per_second": args.gpu_images_per_second, "workers": need}
        print(f"{args.gpus} GPUs at {args.gpu_images_per_second:.0f} images/s each need {need:.0f} workers")
    settings_record = {
        "jpeg": {"width": WIDTH, "height": HEIGHT, "quality": 90, "mean_kib": mean_kib},
        "train_images": args.images,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "repeats": args.repeats,
        "main_process_threads": 1,
    }
    print(f"JPEGs {WIDTH}x{HEIGHT}, mean {mean_kib:.0f} KiB")
    write_json(args.out, record(settings=settings_record, rows=rows, advice=advice))


if __name__ == "__main__":
    main()
