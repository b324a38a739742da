"""Small float models shared by the pass, error and mapping tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kaiming_init(model: nn.Module) -> None:
    """He init (fan_in, ReLU gain): activations keep unit scale through the layers, so every input
    quantizer sees values across its whole range (PyTorch's default init shrinks them towards 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


class Block(nn.Module):
    """ResNet basic block; a strided or widening block gets a 1x1 conv + BN downsample."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """stem conv -> two residual blocks (the second downsamples) -> pool -> fc.

    Quantizable layers, in graph order: stem, layer1.conv1, layer1.conv2,
    layer2.downsample.0, layer2.conv1, layer2.conv2, fc. Every input but the
    stem's is behind a ReLU.
    """

    def __init__(self, num_classes: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = Block(8, 8)
        self.layer2 = Block(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


QUANTIZED_BY_DEFAULT = ["layer1.conv1", "layer1.conv2", "layer2.downsample.0", "layer2.conv1", "layer2.conv2"]
"""TinyResNet layers default_qconfig_mapping quantizes (stem and fc stay float)."""


class FunctionalNet(nn.Module):
    """Activations, residual add, pooling and flatten written as functional calls."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.hidden = nn.Linear(8, 16)
        self.fc = nn.Linear(16, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        y = F.relu(self.conv2(x))
        x = F.relu(torch.add(self.conv3(y), x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(F.relu(self.hidden(x)))


class SignedNet(nn.Module):
    """``conv_b`` is fed by a BatchNorm output with no ReLU, so its input is signed.

    Quantizable layers: stem (first), conv_a, conv_b (signed input), hidden, fc (last).
    """

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(8, 16)
        self.fc = nn.Linear(16, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.stem(x))
        x = self.bn_a(self.conv_a(x))  # no ReLU: conv_b sees negative values
        x = self.relu(self.conv_b(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.relu(self.hidden(x)))


class DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if x.sum() > 0:
            x = -x
        return self.fc(x.mean((2, 3)))


class SharedConv(nn.Module):
    """The same ``shared`` conv module is called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.shared(x))
        x = F.relu(self.shared(x))
        return self.fc(x.mean((2, 3)))


class DirectConv(nn.Module):
    """Calls F.conv2d itself with a parameter: prepare cannot quantize that call."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.kernel = nn.Parameter(torch.randn(4, 4, 3, 3) * 0.1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(F.conv2d(x, self.kernel, padding=1))
        x = F.relu(self.conv(x))
        return self.fc(x.mean((2, 3)))


def images(batch: int = 4, channels: int = 3, size: int = 8, *, seed: int = 0) -> Tensor:
    """Reproducible random images (signed values, as after input normalisation)."""
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))
