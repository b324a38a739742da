"""What every benchmark script shares: its record, atomic JSON, subprocess jobs.

A benchmark is a page of what it measures; this module is how it runs and
writes: ``record(...)`` stamps the machine, torch and adq_fx commit on the
sections a script measured, ``write_json`` makes the file appear whole or not
at all, ``run_script`` re-invokes a script in a fresh process with its own
thread count (a measurement must not share torch's state with another), and
``marked_result`` reads the one JSON line a child printed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
T = TypeVar("T")
R = TypeVar("R")


def code_version() -> dict[str, Any]:
    """The commit the library was at, and whether adq_fx/ had uncommitted changes."""

    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "--short", "HEAD") or None,
            "adq_fx_dirty": bool(git("status", "--porcelain", "--", "adq_fx")),
        }
    except OSError:  # no git
        return {"commit": None, "adq_fx_dirty": None}


def record(device: torch.device | None = None, **sections: Any) -> dict[str, Any]:
    """``sections`` (settings, results, rows, ...) with what produced them: machine, torch, code, time."""
    import torch  # here, not at import: a planning parent process needs no torch

    from adq_fx.environment import machine_info

    return {
        "machine": machine_info(device if device is not None else torch.device("cpu")),
        "torch": torch.__version__,
        "code": code_version(),
        "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **sections,
    }


def write_json(path: Path | str, data: Any) -> Path:
    """Write ``data`` as indented JSON; the file appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(json.dumps(data, indent=2))
    partial.replace(path)
    return path


def run_script(
    script: Path | str,
    arguments: list[str],
    *,
    threads: int | None = None,
    output: Literal["capture", "inherit"] | Path = "capture",
) -> subprocess.CompletedProcess[str]:
    """``python script arguments`` from the repo root in a fresh process with ``threads`` torch threads.

    ``output``: captured (read ``.stdout``), inherited (this terminal), or appended to a log file.
    """
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, str(Path(script).resolve()), *arguments]
    if output == "capture":
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if output == "inherit":
        return subprocess.run(command, cwd=REPO, env=env, text=True, check=False)
    with open(output, "a") as handle:
        return subprocess.run(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True, check=False
        )


def marked_result(stdout: str, marker: str) -> dict[str, Any] | None:
    """The JSON a child printed after ``marker`` on its last such line, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    return None


def run_parallel(items: Iterable[T], run_one: Callable[[T], R], workers: int) -> Iterator[R]:
    """``run_one`` over ``items``, ``workers`` at a time (each typically a subprocess), as they finish."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(run_one, item) for item in items]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()
    finally:  # on an interrupt, start nothing new; the items already running finish (or are killed)
        pool.shutdown(wait=True, cancel_futures=True)


# -- the pre-trained CIFAR-10 ResNet-20 that several benchmarks measure ----------------------------
PRETRAINED = "../shared/data/resnet20-cifar10-akamaster.th"  # relative to the repo root


def pretrained_parser(description: str | None, out: str) -> argparse.ArgumentParser:
    """--checkpoint/--rename/--data/--out for a benchmark of the pre-trained ResNet-20."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=PRETRAINED)
    parser.add_argument("--rename", nargs="*", default=["linear.=fc."])
    parser.add_argument("--data", default="imagefolder:data")
    parser.add_argument("--out", default=str(RESULTS / out))
    return parser


def pretrained_resnet20(args: argparse.Namespace) -> tuple[Any, Any]:
    """(the data set less the 5,000-image validation split, the float ResNet-20 from --checkpoint)."""
    import torch

    from adq_fx.train.checkpoints import load_float_state
    from adq_fx.train.data import load_dataset
    from adq_fx.train.models import build_model

    torch.manual_seed(0)
    data = load_dataset(args.data).hold_out(5000)
    model = build_model("resnet20", data.num_classes)
    load_float_state(model, args.checkpoint, args.rename)
    return data, model
