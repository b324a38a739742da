"""CIFAR-10 top-1 of the deployed int8 model against the trained model it came from.

    mkdir -p data && tar -xJf ../shared/data/cifar10-jpeg.tar.xz -C data
    python benchmarks/int8_accuracy.py --checkpoint ../shared/data/resnet20-cifar10-akamaster.th

From a pre-trained float ResNet-20 (the akamaster checkpoint: its ``module.``
prefix is stripped and ``linear`` renamed ``fc``), one epoch of W3A3 QAT with
``adq-fx train``'s engine at its defaults (ADQ codebooks, N2UQ thresholds),
twice: with the default learned codebook (snapped to the int8 grid at
convert) and with ``int8_grid=True`` (kept on the grid while training). Each run
reports the float, QAT and reference-converted top-1 (equal to QAT by
construction), and the int8 model's top-1 and its top-1 agreement with the
reference, on the full 10,000-image test set; and the int8 model's agreement
with a float reference whose codebooks were snapped the same way, which
separates what snapping changes from what the integer kernels change. Writes
benchmarks/results/int8_accuracy.json. About 25 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from _runner import record, write_json  # a sibling module

import adq_fx
from adq_fx.environment import describe
from adq_fx.int8.grid import to_int8_grid, weight_limit
from adq_fx.nn import LUTConv2d, LUTLinear
from adq_fx.passes.lower_int8 import lower_to_int8
from adq_fx.train.checkpoints import find_state_dict, parse_renames, rename_keys
from adq_fx.train.config import TrainConfig
from adq_fx.train.data import load_dataset
from adq_fx.train.engine import run_training
from adq_fx.train.models import build_model

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "results" / "int8_accuracy.json"


def ours_from_akamaster(path: Path, out: Path) -> Path:
    """The checkpoint in this library's ResNet-20 names, as ``{"model": state_dict}``."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    renamed = rename_keys(find_state_dict(blob, str(path)), parse_renames(["linear.=fc."]))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": renamed}, out)
    return out


def snapped_reference_agreement(run_dir: Path, data_spec: str) -> float:
    """Top-1 agreement of the int8 model with the *float* reference whose codebooks were snapped the
    same way: separates what the snap changes in the network from what the integer kernels change."""
    saved = torch.load(run_dir / "converted.pt", weights_only=True)
    data = load_dataset(data_spec)
    example = (data.normalise(data.train_x[:64]),)
    reference = adq_fx.load_converted(
        build_model("resnet20", 10), saved["model"], saved["quantization_map"], example, backend="reference"
    ).eval()
    int8 = copy.deepcopy(reference)
    lower_to_int8(int8)
    snapped = copy.deepcopy(reference)
    for module in snapped.modules():
        if isinstance(module, (LUTConv2d, LUTLinear)):  # the grid lower_to_int8 chose, in float
            grid = to_int8_grid(module.codebook, weight_limit(module.act_bits))
            module.codebook.copy_((grid.integers.double() * grid.step).float())
    agree = count = 0
    with torch.no_grad():
        for x, _ in data.test_batches(500):
            x = x.contiguous(memory_format=torch.channels_last)
            agree += int((int8(x).argmax(1) == snapped(x).argmax(1)).sum())
            count += len(x)
    return 100.0 * agree / count


def markdown(data: dict) -> str:
    lines = [
        "| codebook | float % | QAT % | converted (reference) % | int8 % | int8 − trained, pt "
        "| top-1 agreement int8 vs reference % | int8 vs reference with the same snapped codebook % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['codebook']} | {r['float_accuracy']:.2f} | {r['qat_accuracy']:.2f} | "
            f"{r['converted_accuracy']:.2f} | {r['int8_accuracy']:.2f} | "
            f"{r['int8_accuracy'] - r['qat_accuracy']:+.2f} | {r['int8_agreement']:.2f} | "
            f"{r['int8_agreement_with_snapped_reference']:.2f} |"
        )
    s = data["settings"]
    lines.append(
        f"\nCIFAR-10 (JPEG q75 copy), full test set; ResNet-20 from the akamaster checkpoint, "
        f"W{s['bits']}A{s['bits']}, {s['epochs']} QAT epoch(s) at lr {s['lr']}, first and last "
        f"layer float; {describe(data['machine'])}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="the akamaster ResNet-20 .th file")
    parser.add_argument("--data", default="imagefolder:data", help="TrainConfig.dataset")
    parser.add_argument("--epochs", type=int, default=1, help="QAT epochs per run")
    parser.add_argument("--lr", type=float, default=0.01, help="QAT learning rate")
    parser.add_argument("--bits", type=int, default=3, help="weight and activation bits")
    parser.add_argument(
        "--train-subset", type=int, default=None, help="train on this many images (smoke runs)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON")
    args = parser.parse_args()
    work = REPO / "runs" / "int8_accuracy"
    start = ours_from_akamaster(args.checkpoint, work / "float_resnet20.pt")
    rows = []
    for codebook, on_grid in (("learned (snapped at convert)", False), ("int8_grid=True", True)):
        config = TrainConfig(
            dataset=args.data,
            model="resnet20",
            out_dir=str(work / f"grid_{on_grid}"),
            float_checkpoint=str(start),
            epochs=args.epochs,
            lr=args.lr,
            target_bits=args.bits,
            int8_grid=on_grid,
            train_subset=args.train_subset,
            plots=False,
            progress=False,
        )
        result = run_training(config)
        rows.append(
            {
                "codebook": codebook,
                "int8_grid": on_grid,
                **{
                    k: result[k]
                    for k in (
                        "float_accuracy",
                        "qat_accuracy",
                        "converted_accuracy",
                        "int8_accuracy",
                        "int8_agreement",
                        "seconds",
                    )
                },
                "int8_agreement_with_snapped_reference": snapped_reference_agreement(
                    Path(config.out_dir), args.data
                ),
            }
        )
        print(rows[-1], flush=True)
    data = record(
        rows=rows,
        settings={
            "epochs": args.epochs,
            "lr": args.lr,
            "bits": args.bits,
            "data": args.data,
            "train_subset": args.train_subset,
            "checkpoint": args.checkpoint.name,
        },
    )
    write_json(args.out, data)
    print(markdown(data))


if __name__ == "__main__":
    main()
