"""AdaFace's IR backbones (IR-18/34/50/101, 112x112 input), with the published state-dict names.

State-dict layout (inside the Lightning checkpoint these keys carry the `model.` prefix):
    input_layer: [0] conv3x3 3->64 (no bias), [1] BN, [2] PReLU
    body.{i}: `BasicBlockIR` units; shortcut_layer = MaxPool2d(1, stride) (no parameters) when the channel count
        stays, else [0] conv1x1(stride), [1] BN; res_layer = [0] BN, [1] conv3x3, [2] BN, [3] PReLU,
        [4] conv3x3(stride), [5] BN
    output_layer: [0] BN2d(512), [1] Dropout, [2] Flatten, [3] Linear(512*7*7, 512), [4] BatchNorm1d(affine=False)
Every BatchNorm uses PyTorch's defaults (eps 1e-5). forward returns (embedding / ||embedding||, ||embedding||).
"""

from __future__ import annotations

import torch
from torch import nn

# blocks per stage; the first unit of each stage has stride 2. Stage widths 64, 128, 256, 512.
UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


class BasicBlockIR(nn.Module):
    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceIR(nn.Module):
    """`units`: blocks per stage (see UNITS; AdaFace's "IR-101" is UNITS[100])."""

    def __init__(self, units, embedding_size: int = 512):
        super().__init__()  # registration order as published (output_layer before body): same state-dict order
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, embedding_size),
            nn.BatchNorm1d(embedding_size, affine=False),
        )
        body, in_channels = [], 64
        for depth, count in zip((64, 128, 256, 512), units):
            for i in range(count):
                body.append(BasicBlockIR(in_channels, depth, 2 if i == 0 else 1))
                in_channels = depth
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor):
        x = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.norm(x, 2, 1, True)
        return x / norm, norm
