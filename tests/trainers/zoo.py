"""The model zoo: the architectures users bring, written in plain torch the way a user writes them.

Every technique and every runtime is tested against these (tests/trainers/test_zoo.py). Each is a
factory with the README's contract (`input_shape`, `num_classes`), so a spec names it as
`model: {kind: "tests.trainers.zoo:resnet"}`. They are small on purpose: a trial trains in seconds.
"""

import math

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (a 1x1 strided projection when the shape changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: conv-BN-ReLU stem, residual blocks (one strided, with a 1x1 projection), global
    average pool, Linear head."""

    def __init__(self, input_shape, num_classes: int, width: int = 16):
        super().__init__()
        channels = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class DepthwiseSeparable(nn.Module):
    """MobileNet's block: depthwise 3x3 conv (groups = channels)-BN-ReLU6, pointwise 1x1 conv-BN-ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.pointwise(self.act(self.bn1(self.depthwise(x))))))


class MobileNet(nn.Module):
    """A small MobileNet-v1: a conv stem then depthwise-separable blocks, global pool, Linear head."""

    def __init__(self, input_shape, num_classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU6(),
            DepthwiseSeparable(width, 2 * width, stride=2),
            DepthwiseSeparable(2 * width, 4 * width, stride=2),
            DepthwiseSeparable(4 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class Transformer(nn.Module):
    """A transformer encoder over an image's rows (each row one token): Linear embedding, a learned
    positional parameter, `nn.TransformerEncoder` (MultiheadAttention, LayerNorm, GELU), mean pool,
    Linear head."""

    def __init__(self, input_shape, num_classes: int, dim: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        self.tokens = input_shape[-2] if len(input_shape) > 1 else 1
        features = math.prod(input_shape) // self.tokens
        self.embed = nn.Linear(features, dim)
        self.position = nn.Parameter(torch.zeros(1, self.tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.tokens, -1)
        x = self.encoder(self.embed(x) + self.position)
        return self.head(self.norm(x.mean(dim=1)))


class TextClassifier(nn.Module):
    """An embedding text classifier: token ids -> nn.EmbeddingBag (mean), Linear-ReLU-Linear.

    Takes (N, length) int64 token ids, 0 for padding (the `text` source's token encoding)."""

    def __init__(self, input_shape, num_classes: int, vocabulary: int = 4096, dim: int = 32):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocabulary, dim, mode="mean", padding_idx=0)
        self.hidden = nn.Linear(dim, dim)
        self.relu = nn.ReLU()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.hidden(self.embedding(tokens.long()))))


def resnet(input_shape, num_classes, width=16):
    return ResNet(input_shape, num_classes, width)


def mobilenet(input_shape, num_classes, width=16):
    return MobileNet(input_shape, num_classes, width)


def transformer(input_shape, num_classes, dim=32, heads=4, layers=2):
    return Transformer(input_shape, num_classes, dim, heads, layers)


def text_classifier(input_shape, num_classes, vocabulary=4096, dim=32):
    return TextClassifier(input_shape, num_classes, vocabulary, dim)


ZOO = {"resnet": resnet, "mobilenet": mobilenet, "transformer": transformer}
"""The image models, by name; the text classifier needs token-id rows and is tested on its own."""
