"""The improved ResNet ("IResNet") of insightface arcface_torch, and its MagFace and CR-FIQA variants.

State-dict layout (what the published `backbone.pth` files hold, no prefix):
    conv1 (3x3, 3->64, no bias), bn1, prelu (64),
    layer1..layer4: blocks of `IBasicBlock` (bn1, conv1 3x3, bn2, prelu, conv2 3x3 with the stride, bn3;
        `downsample` = [1x1 conv with the stride, BN] on the first block of each stage),
    bn2 (512), dropout, fc (512*7*7 -> num_features), features (BatchNorm1d), and for CR-FIQA `qs` (Linear -> 1).
The variants differ only in BatchNorm eps and momentum (arcface_torch and CR-FIQA 1e-5 / 0.1, MagFace 2e-5 / 0.9;
the momentum matters only in training) and CR-FIQA's extra quality head, whose output comes second: forward
returns `embedding` or `(embedding, quality)`.
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}


def _bn2d(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class IBasicBlock(nn.Module):
    """Pre-activation residual unit: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int, eps: float, momentum: float,
                 downsample: nn.Module | None):
        super().__init__()
        self.bn1 = _bn2d(inplanes, eps, momentum)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn2d(planes, eps, momentum)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = _bn2d(planes, eps, momentum)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return y + shortcut


class IResNet(nn.Module):
    """`layers`: blocks per stage (see LAYERS); `bn_eps`: 1e-5 (arcface_torch, CR-FIQA) or 2e-5 (MagFace);
    `quality_head`: CR-FIQA's `qs` Linear(num_features, 1), returned as a second output."""

    def __init__(self, layers, num_features: int = 512, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 quality_head: bool = False, input_size: int = 112):
        super().__init__()
        if input_size % 16:
            raise ValueError("IResNet needs an input size divisible by 16")
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = _bn2d(64, bn_eps, bn_momentum)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, 2, bias=False),
                                       _bn2d(planes, bn_eps, bn_momentum))
            stage = [IBasicBlock(inplanes, planes, 2, bn_eps, bn_momentum, downsample)]
            stage += [IBasicBlock(planes, planes, 1, bn_eps, bn_momentum, None) for _ in range(1, blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            inplanes = planes
        self.bn2 = _bn2d(512, bn_eps, bn_momentum)
        self.dropout = nn.Dropout(p=0.0)  # parameter-free; identity at inference
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=bn_eps, momentum=bn_momentum)
        self.qs = nn.Linear(num_features, 1) if quality_head else None

    def forward(self, x: torch.Tensor):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        embedding = self.features(self.fc(x))
        if self.qs is None:
            return embedding
        return embedding, self.qs(embedding)
