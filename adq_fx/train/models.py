"""Networks by name: CIFAR ResNet-20/32/56, the digits CNN, any torchvision classifier."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ShortcutA(nn.Module):
    """He et al. (2016) CIFAR option A: subsample and zero-pad channels; no parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], self.pad)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_shortcut = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = _ShortcutA(in_planes, planes, stride) if needs_shortcut else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs, 16-32-64 channels, option-A shortcuts (He et al. 2016, §4.2)."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CifarResNet(depth={depth}): depth must be 6n + 2 (20, 32, 44, 56, 110).")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DigitsCNN(nn.Module):
    """A small ResNet-flavoured CNN for 8x8 digits (first conv and last linear stay float)."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.hidden = nn.Linear(2 * width, 2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(x)))  # residual add
        x = F.relu(self.bn3(self.conv3(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(F.relu(self.hidden(x)))


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """'resnet20' / 'resnet32' / 'resnet56' (CIFAR), 'digits_cnn', or a torchvision model name."""
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in (20, 32, 44, 56, 110):
        return CifarResNet(int(name[6:]), num_classes)
    if name == "digits_cnn":
        return DigitsCNN(num_classes=num_classes)
    import torchvision

    try:
        return torchvision.models.get_model(name, num_classes=num_classes)
    except ValueError as err:
        raise ValueError(
            f"unknown model {name!r}: use resnet20/32/44/56/110 (CIFAR), digits_cnn, or a torchvision "
            f"classifier name such as resnet18 ({err})."
        ) from err


def pretrained_weights(name: str) -> Any:
    """torchvision's DEFAULT weight enum for ``name``, with an error saying what to use instead."""
    import torchvision

    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"--pretrained: torchvision has no pre-trained weights for {name!r} (only its own classifiers, "
            "e.g. resnet18, mobilenet_v2). Start from your own weights with --float-checkpoint FILE."
        ) from err


def download_state_dict(weights: Any, purpose: str) -> dict[str, Tensor]:
    """The weights' state_dict from torch.hub's cache, or downloaded; a clear error when neither works."""
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a truncated file a RuntimeError
        raise RuntimeError(
            f"{purpose}: could not load torchvision's {weights} from {weights.url} ({err}). On a machine "
            "without network access, copy the file into torch.hub's cache "
            f"({torch.hub.get_dir()}/checkpoints/) or pass your own weights with --float-checkpoint FILE."
        ) from err


def load_pretrained(model: nn.Module, name: str) -> list[str]:
    """Load torchvision's pre-trained weights for ``name`` into ``model``; return re-initialised keys.

    When the data has another number of classes than the weights (1000 for
    ImageNet), the classifier keeps its fresh initialisation and a warning names it.
    """
    weights = pretrained_weights(name)
    state = download_state_dict(weights, f"--pretrained {name}")
    own = model.state_dict()
    fresh = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if fresh:
        warnings.warn(
            f"--pretrained {name}: {fresh} keep their fresh initialisation: the data has "
            f"{own[fresh[0]].shape[0]} classes, the weights {state[fresh[0]].shape[0]} "
            f"(shapes {[tuple(own[k].shape) for k in fresh]} vs "
            f"{[tuple(state[k].shape) for k in fresh]}). Fine-tune with --finetune-epochs before QAT.",
            stacklevel=2,
        )
        state = {**state, **{k: own[k] for k in fresh}}
    model.load_state_dict(state)
    return fresh


def build_teacher(name: str, num_classes: int) -> nn.Module:
    """A torchvision classifier with its pre-trained weights, for --kd-teacher."""
    weights = pretrained_weights(name)
    categories = len(weights.meta.get("categories") or [])
    if categories and categories != num_classes:
        raise ValueError(
            f"--kd-teacher {name}: its pre-trained weights predict {categories} classes, the data has "
            f"{num_classes}; a teacher must predict the student's classes. Leave out --kd-teacher to "
            "distil from the float start (--kd), or use a teacher trained on this data."
        )
    teacher = build_model(name, num_classes)
    teacher.load_state_dict(download_state_dict(weights, f"--kd-teacher {name}"))
    return teacher
