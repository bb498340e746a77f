"""The networks: `features` -> global average pooling -> (dropout) -> linear head `fc`.

Every model exposes the same interface, which last-layer Laplace and class
activation maps rely on, so no code has to guess which layer is last::

    fmap   = model.features(x)          # B x K x h x w, the last convolutional feature maps
    phi    = model.pool(fmap)           # B x K, global average pooling
    logits = model.fc(model.dropout(phi))

`build_model(name, num_classes)` makes `small` (K = 128: 128 * 7 + 7 = 903
last-layer parameters for 7 classes, as the course report's small model),
`large` (K = 512: 3,591 last-layer parameters, as its large model) and
`resnet18` (torchvision's ResNet-18 with a one-channel stem, K = 512). No
weights are downloaded; `weights=` takes a local file.
"""

from __future__ import annotations

import os

import torch
from torch import nn

ARCHS = ("small", "large", "resnet18")


class XrayNet(nn.Module):
    """features -> global average pool -> dropout -> fc."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int, dropout: float = 0.0,
                 arch: str = ""):
        super().__init__()
        self.features = features
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(num_features, num_classes)
        self.num_features, self.num_classes, self.arch = num_features, num_classes, arch

    @staticmethod
    def pool(fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(-2, -1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features phi(x) (B x K): the head's input."""
        return self.pool(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embed(x)))


def conv_bn(i: int, o: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(i, o, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]


def _vgg(widths: tuple[int, ...], pools: tuple[bool, ...]) -> nn.Sequential:
    """A strided 5x5 stem, then 3x3 conv-BN-ReLU layers, max-pooling after those flagged."""
    layers = conv_bn(1, widths[0], k=5, stride=2)
    for i, o, pool in zip(widths[:-1], widths[1:], pools):
        layers += conv_bn(i, o)
        if pool:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def small_features() -> tuple[nn.Module, int]:
    """Downsamples early (stride-2 stem, two pools): a 64 px image gives 8 x 8 maps of 128 channels."""
    return _vgg((16, 32, 64, 128, 128), (True, True, False, False)), 128


def large_features() -> tuple[nn.Module, int]:
    """Wider and deeper: a 224 px image gives 14 x 14 maps of 512 channels."""
    return _vgg((32, 64, 128, 256, 256, 512), (True, True, True, False, False)), 512


def resnet18_features() -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    r = resnet18(weights=None)
    r.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4), 512


_FEATURES = {"small": small_features, "large": large_features, "resnet18": resnet18_features}


def build_model(name: str, num_classes: int, dropout: float = 0.0, weights: str | os.PathLike | None = None
                ) -> XrayNet:
    """The architecture `name` (small, large, resnet18) with a `num_classes`-way head.

    `weights`: a local state-dict file to initialise from (a checkpoint of this
    repository, or torchvision ResNet-18 weights whose 3-channel stem is summed to
    one channel); the head is kept only if its shape matches.
    """
    if name not in _FEATURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    features, k = _FEATURES[name]()
    model = XrayNet(features, k, num_classes, dropout, arch=name)
    if weights:
        load_weights(model, weights)
    return model


def load_weights(model: XrayNet, path: str | os.PathLike) -> None:
    """Initialise from a local file (never executes code: weights_only loading)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    if "conv1.weight" in sd:  # torchvision ResNet naming -> our Sequential
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        sd = {f"features.{names.index(k.split('.')[0])}.{k.split('.', 1)[1]}": v for k, v in sd.items()
              if k.split(".")[0] in names} | {k: v for k, v in sd.items() if k.startswith("fc.")}
    own = model.state_dict()
    for k, v in list(sd.items()):
        if k in own and v.ndim == 4 and v.shape[1] == 3 and own[k].shape[1] == 1:
            sd[k] = v.sum(1, keepdim=True)
    sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in sd and not k.startswith("fc.")]
    if missing:
        raise ValueError(f"{path} does not fit architecture {model.arch!r}: {len(missing)} tensor(s) missing, "
                         f"e.g. {missing[:3]}")
    model.load_state_dict(sd, strict=False)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
