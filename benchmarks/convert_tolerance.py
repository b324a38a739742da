"""How closely a converted (lookup-table) model reproduces the trained one.

ADQ on four models, then the baselines (LSQ, N2UQ, POST + ASQ) on the residual one, then
resnet18 again with the compiled kernels forced on (adq_fx.set_kernel_backend("compiled")).
Trains each model a few QAT steps on random data (so codebooks, thresholds and
BatchNorm statistics have moved off their init), converts, and reports
max |converted - prepared| and that relative to max |prepared| on fresh
inputs, in eval mode. Writes benchmarks/results/convert_tolerance.json.

    python benchmarks/convert_tolerance.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from _runner import RESULTS, record, write_json  # a sibling module

import adq_fx
from adq_fx.environment import describe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from models import FunctionalNet, SignedNet, TinyResNet

METHODS = {
    "LSQ": adq_fx.ADQConfig(
        weight=adq_fx.LSQWeightConfig(bits=3), activation=adq_fx.LSQActivationConfig(bits=3)
    ),
    "N2UQ": adq_fx.ADQConfig(
        weight=adq_fx.UniformWeightConfig(bits=3), activation=adq_fx.ThresholdActivationConfig(bits=3)
    ),
    "POST + ASQ": adq_fx.ADQConfig(
        weight=adq_fx.POSTWeightConfig(bits=3), activation=adq_fx.ASQActivationConfig(bits=3)
    ),
}


def measure(
    name: str,
    model: torch.nn.Module,
    shape: tuple[int, ...],
    steps: int = 5,
    config: adq_fx.ADQConfig | None = None,
) -> dict:
    torch.manual_seed(0)
    example = torch.randn(shape)
    mapping = (
        adq_fx.default_qconfig_mapping(3) if config is None else adq_fx.ADQConfigMapping().set_global(config)
    )
    prepared = adq_fx.prepare_adq(model, mapping, (example,))
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.01, momentum=0.9)
    prepared.train()
    for _ in range(steps):
        x = torch.randn(shape)
        out = prepared(x)
        labels = torch.randint(0, out.shape[1], (shape[0],))
        loss = F.cross_entropy(out, labels) + adq_fx.commitment_loss(prepared)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prepared.eval()
    converted = adq_fx.convert_adq(prepared)
    x = torch.randn(shape)
    with torch.no_grad():
        y, y_int = prepared(x), converted(x)
    diff = float((y - y_int).abs().max())
    scale = float(y.abs().max())
    return {
        "model": name,
        "input": list(shape),
        "qat_steps": steps,
        "quantized_layers": len(adq_fx.quantization_map(prepared)),
        "max_abs_diff": diff,
        "max_abs_output": scale,
        "relative": diff / scale,
    }


def main() -> None:
    rows = [
        measure("TinyResNet (residual adds)", TinyResNet(), (8, 3, 16, 16)),
        measure("FunctionalNet (functional calls)", FunctionalNet(), (8, 3, 16, 16)),
        measure("SignedNet (signed inputs)", SignedNet(), (8, 3, 16, 16)),
        measure(
            "torchvision resnet18, 10 classes", torchvision.models.resnet18(num_classes=10), (4, 3, 64, 64)
        ),
        *(
            measure(f"TinyResNet, {method}", TinyResNet(), (8, 3, 16, 16), config=config)
            for method, config in METHODS.items()
        ),
    ]
    # The same resnet18 with adq_fx's compiled kernels forced on (`auto` leaves tensors this small eager).
    with adq_fx.kernel_backend("compiled"):
        rows.append(
            measure(
                "torchvision resnet18, 10 classes, compiled kernels",
                torchvision.models.resnet18(num_classes=10),
                (4, 3, 64, 64),
            )
        )
    result = record(rows=rows)
    out = write_json(RESULTS / "convert_tolerance.json", result)
    print("| model | input | max abs diff | max abs output | relative |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {tuple(r['input'])} | {r['max_abs_diff']:.2e} | {r['max_abs_output']:.3g} | "
            f"{r['relative']:.2e} |"
        )
    print(f"\n{describe(result['machine'])}; written to {out}")


if __name__ == "__main__":
    main()
