"""ResNet50 in plain PyTorch (torchvision's layout, "v1.5": stride on the 3x3 convolution).

There is no CPU torchvision wheel on this machine, and the example needs nothing else from
it: this is the same network, built from torch.nn alone, with random weights. ``width``
scales every layer (64 is the real ResNet50; tests use a tiny one).
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = (3, 4, 6, 3)  # bottleneck blocks per stage: ResNet50


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand ×4, plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = (
            nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
            if stride != 1 or inplanes != out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.downsample(x))


class ResNet50(nn.Module):
    """image [batch, 3, H, W] float32 (ImageNet-normalised) → {"probs": [batch, classes]}."""

    def __init__(self, classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        inplanes = width
        for index, blocks in enumerate(LAYERS):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            layers: list[nn.Module] = []
            for block in range(blocks):
                layers.append(Bottleneck(inplanes, planes, stride if block == 0 else 1))
                inplanes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so random activations neither vanish nor explode
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stages(self.stem(image))
        logits = self.fc(torch.flatten(self.pool(x), 1))
        return {"probs": torch.softmax(logits, dim=1)}
