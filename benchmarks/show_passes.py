"""Print gm.code of a small model before prepare, after prepare and after convert.

docs/design.md quotes this output:  python benchmarks/show_passes.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

import adq_fx


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.bn(self.conv(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main() -> None:
    model = TinyNet()
    example = (torch.randn(2, 3, 16, 16),)
    mapping = adq_fx.default_qconfig_mapping(3, keep_first_and_last_float=False)
    prepared = adq_fx.prepare_adq(model, mapping, example)
    adq_fx.calibrate(prepared, example)  # the thresholds start from the first batch they see
    converted = adq_fx.convert_adq(prepared.eval(), backend="reference")  # the LUT layers
    for title, gm in (
        ("before prepare", fx.symbolic_trace(model)),
        ("after prepare_adq", prepared),
        ("after convert_adq", converted),
    ):
        print(f"### {title}\n```python{gm.code.rstrip()}\n```\n")
    print("### converted modules\n```")
    for name, module in converted.named_children():
        print(f"{name}: {module}")
    print("```")


if __name__ == "__main__":
    main()
