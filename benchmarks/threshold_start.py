"""Where each threshold quantizer starts: N2UQ's fixed [0, 2], LSQ's range, or the data's q99.

    python benchmarks/threshold_start.py --checkpoint ../shared/data/resnet20-cifar10-akamaster.th

For every threshold quantizer of a ResNet-20 prepared from a pre-trained float
model (default mapping, 2 and 3 bits; one batch of 128 training images of the
CIFAR-10 JPEG copy) and of a random-init torchvision AlexNet (no BatchNorm, uniform
random 64x64 inputs, as tests/test_optimisation.py), this records the
first batch's 99th percentile of |x|, LSQ's range 2·mean|x|·sqrt(2^b - 1)
(``init="first_batch"``) and the start ``init="auto"`` took. It prints a
summary per model and writes ``benchmarks/results/threshold_start.json``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
import torchvision
from _runner import pretrained_parser, pretrained_resnet20, record, write_json  # a sibling module

import adq_fx
from adq_fx import functional as qf
from adq_fx.quantizers import ThresholdActivationQuantizer

REPO = Path(__file__).resolve().parents[1]


def starts(model: torch.nn.Module, x: torch.Tensor, bits: int) -> list[dict[str, object]]:
    """One row per threshold quantizer: its input's q99, LSQ's range and the auto start."""
    prepared = adq_fx.prepare_adq(model, adq_fx.default_qconfig_mapping(bits), (x[:2],)).eval()
    rows: list[dict[str, object]] = []

    def record(name: str):  # type: ignore[no-untyped-def]
        def hook(module: ThresholdActivationQuantizer, inputs: tuple[torch.Tensor, ...]) -> None:
            v = inputs[0].detach().float()
            rows.append(
                {
                    "quantizer": name,
                    "signed": module.signed,
                    "q99": float(qf.magnitude_quantile(v, 0.99)),
                    "lsq_range": float(2 * v.abs().mean() * module.intervals.numel() ** 0.5),
                }
            )

        return hook

    quantizers = {n: m for n, m in prepared.named_modules() if isinstance(m, ThresholdActivationQuantizer)}
    for name, module in quantizers.items():
        module.register_forward_pre_hook(record(name))
    with torch.no_grad():
        prepared(x)
    for row in rows:
        row["auto_start"] = quantizers[str(row["quantizer"])].started_from
    return rows


def summary(rows: list[dict[str, object]]) -> dict[str, object]:
    ratio = [float(r["lsq_range"]) / float(r["q99"]) for r in rows if float(r["q99"]) > 0]
    return {
        "quantizers": len(rows),
        "kept_fixed": sum(r["auto_start"] == "fixed" for r in rows),
        "moved_to_data": sum(r["auto_start"] == "data" for r in rows),
        "q99_min": min(float(r["q99"]) for r in rows),
        "q99_max": max(float(r["q99"]) for r in rows),
        "lsq_range_over_q99_median": statistics.median(ratio) if ratio else None,
        "lsq_range_over_q99_min": min(ratio) if ratio else None,
    }


def main() -> int:
    args = pretrained_parser(__doc__, "threshold_start.json").parse_args()
    data, resnet = pretrained_resnet20(args)
    resnet.eval()
    generator = torch.Generator().manual_seed(0)
    x, _ = data.train_batch(torch.randint(0, len(data.train_x), (128,), generator=generator), None)
    alexnet = torchvision.models.alexnet(num_classes=10).eval()
    alexnet_x = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cases = {
        "resnet20 pre-trained, 2-bit": (resnet, x, 2),
        "resnet20 pre-trained, 3-bit": (resnet, x, 3),
        "alexnet random init, 3-bit": (alexnet, alexnet_x, 3),
    }
    results = {}
    for label, (model, inputs, bits) in cases.items():
        rows = starts(model, inputs, bits)
        results[label] = {"summary": summary(rows), "rows": rows}
        s = results[label]["summary"]
        print(
            f"{label}: {s['kept_fixed']}/{s['quantizers']} keep N2UQ's start, {s['moved_to_data']} move "
            f"to the data; q99 {s['q99_min']:.3g}..{s['q99_max']:.3g}; LSQ range / q99 median "
            f"{s['lsq_range_over_q99_median']:.3g} (min {s['lsq_range_over_q99_min']:.3g})"
        )
    write_json(
        args.out,
        record(
            settings={
                **vars(args),
                "auto_start_tolerance": adq_fx.ThresholdActivationConfig.AUTO_START_TOLERANCE,
            },
            results=results,
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
