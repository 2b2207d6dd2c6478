"""Models the package ships for its studies and tests (no downloaded weights)."""

from __future__ import annotations

from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs with BatchNorm, ReLU, and the residual added in
    forward (``out += identity``), which conversion traces with torch.fx."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNetCifar(nn.Module):
    """ResNet-18 in its CIFAR-10 form: 3x3 stride-1 stem, no max-pool, four stages of two
    BasicBlocks (widths w, 2w, 4w, 8w; w = 64 is the standard model), global average pool, fc."""

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3,
                 blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.width = width
        self.conv1 = conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], width
        for stage, count in enumerate(blocks):
            planes = width * 2**stage
            stage_blocks = []
            for i in range(count):
                stage_blocks.append(BasicBlock(in_planes, planes, stride=2 if stage > 0 and i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x).flatten(1)
        return self.fc(x)


def resnet18_cifar(num_classes: int = 10, width: int = 64, in_channels: int = 3) -> ResNetCifar:
    """ResNet-18, CIFAR-10 variant (width 64 is the standard 11M-parameter model)."""
    return ResNetCifar(num_classes=num_classes, width=width, in_channels=in_channels)
