"""How large a threshold parameter's gradient is next to a weight's, with and without LSQ's scale.

    python benchmarks/update_scale.py --checkpoint ../shared/data/resnet20-cifar10-akamaster.th

LSQ's rule for a learned quantizer parameter: one SGD step should move it by
about the fraction of itself that it moves a weight. This measures that
fraction, |grad| / |value|, for every conv weight and every threshold
parameter (intervals, beta1) of a 3-bit ADQ ResNet-20 prepared from a
pre-trained float model, on a few training batches of the CIFAR-10 JPEG copy,
with ``ThresholdActivationConfig(grad_scale=False)`` and ``True`` (the default cap
max_relative_gradient=1.0 in effect in both); it prints
the medians and their ratio and writes ``benchmarks/results/update_scale.json``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from _runner import pretrained_parser, pretrained_resnet20, record, write_json  # a sibling module

import adq_fx
from adq_fx import ADQConfig, ADQConfigMapping, CodebookWeightConfig, ThresholdActivationConfig
from adq_fx.quantizers import ThresholdActivationQuantizer

REPO = Path(__file__).resolve().parents[1]


def relative_gradients(model: torch.nn.Module, batches: list, grad_scale: bool) -> dict[str, float]:
    config = ADQConfig(
        weight=CodebookWeightConfig(bits=3),
        activation=ThresholdActivationConfig(bits=3, grad_scale=grad_scale),
    )
    prepared = adq_fx.prepare_adq(model, ADQConfigMapping().set_global(config), (batches[0][0],))
    prepared.train()
    weights, thresholds = [], []
    for x, y in batches:
        prepared.zero_grad(set_to_none=True)
        (F.cross_entropy(prepared(x), y) + adq_fx.commitment_loss(prepared)).backward()
        for module in prepared.modules():
            if hasattr(module, "weight_quantizer"):
                weights.append(float(module.weight.grad.norm() / module.weight.norm()))
            if isinstance(module, ThresholdActivationQuantizer):
                thresholds.append(float(module.intervals.grad.norm() / module.intervals.norm()))
                thresholds.append(abs(float(module.beta1.grad / module.beta1)))
    return {
        "weights_median": statistics.median(weights),
        "thresholds_median": statistics.median(thresholds),
        "thresholds_max": max(thresholds),
        "ratio_of_medians": statistics.median(thresholds) / statistics.median(weights),
    }


def main() -> int:
    parser = pretrained_parser(__doc__, "update_scale.json")
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    data, model = pretrained_resnet20(args)
    generator = torch.Generator().manual_seed(0)
    batches = [
        data.train_batch(torch.randint(0, len(data.train_x), (128,), generator=generator), generator)
        for _ in range(args.batches)
    ]
    results = {
        "unscaled": relative_gradients(model, batches, False),
        "lsq_scaled": relative_gradients(model, batches, True),
    }
    for name, r in results.items():
        print(
            f"{name:10s} median |g|/|p|: weights {r['weights_median']:.3g}, thresholds "
            f"{r['thresholds_median']:.3g} (max {r['thresholds_max']:.3g}); "
            f"ratio {r['ratio_of_medians']:.3g}"
        )
    write_json(args.out, record(settings=vars(args), results=results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
