"""The DeepHEMNMA network: a ResNet feature extractor (1-channel input) and MLP heads.

Paper (Hamitouche & Jonic 2022): ResNet-34 whose 1000 outputs feed an MLP 1000-512-128-outputs
with ReLU and dropout 0.5.  Written here from scratch (no torchvision, no pretrained weights):

- stem: 7x7 convolution, stride 2 (``width`` channels) -> BatchNorm -> ReLU -> 3x3 max-pool, stride 2;
- stages of BasicBlocks (two 3x3 convolutions + identity or 1x1 projection shortcut), ``blocks``
  per stage ((3, 4, 6, 3) for ResNet-34), widths ``width * (1, 2, 4, 8)``, stride 2 from stage 2;
- global average pooling -> linear ``8 width -> features`` (ResNet's 1000-way output layer);
- head: linear ``features -> 512``, ReLU, dropout, ``512 -> 128``, ReLU, dropout, ``128 -> outputs``
  (dropout after each hidden layer, as in the paper's Keras head).

Architectures (``arch``):
- ``shared``: one backbone, one head per target (amplitudes M, quaternion 4, shifts 2);
- ``separate``: one whole network (backbone + head) per target, as the paper trained them.
Summing the targets' losses over disjoint networks and stepping one Adam optimiser is the same as
training the separate networks one by one with the same settings, only concurrently.

``blocks``, ``width``, ``features`` and ``hidden`` are configurable so that tests can use a small
network; :func:`build_network` rebuilds one from the configuration saved in a model file.
"""
from torch import nn

__all__ = ["target_sizes", "ResNet", "Head", "DeepHEMNMANet", "build_network", "count_parameters",
           "RESNET34_BLOCKS"]

RESNET34_BLOCKS = (3, 4, 6, 3)


def target_sizes(n_modes):
    """Outputs per target: amplitudes (one per mode), unit quaternion (w, x, y, z), shifts (x, y)."""
    return {"amplitudes": int(n_modes), "quaternion": 4, "shifts": 2}


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """Images ``(N, 1, D, D)`` -> features ``(N, features)``."""

    def __init__(self, blocks=RESNET34_BLOCKS, width=64, features=1000, in_channels=1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            layers = [BasicBlock(cin, cout, 1 if i == 0 else 2)]
            layers += [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BatchNorm of each residual branch: every block starts as the identity,
        # which lets deep ResNets train at large batch sizes and learning rates (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


class Head(nn.Module):
    """MLP ``features -> hidden... -> outputs``, ReLU and dropout after each hidden layer."""

    def __init__(self, features, outputs, hidden=(512, 128), dropout=0.5):
        super().__init__()
        layers, cin = [], features
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.ReLU(), nn.Dropout(dropout)]
            cin = h
        layers.append(nn.Linear(cin, outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


class DeepHEMNMANet(nn.Module):
    """Images ``(N, D, D)`` or ``(N, 1, D, D)`` -> ``{target: raw outputs (N, k)}``.

    Outputs are in standardised label units (see :mod:`.labels`); the quaternion output is not
    normalised here (the loss and the prediction normalise it).
    """

    def __init__(self, n_modes, arch="shared", blocks=RESNET34_BLOCKS, width=64, features=1000,
                 hidden=(512, 128), dropout=0.5, targets=None):
        super().__init__()
        if arch not in ("shared", "separate"):
            raise ValueError("arch must be 'shared' or 'separate', not %r" % arch)
        sizes = target_sizes(n_modes)
        self.targets = list(targets or [t for t in sizes if sizes[t] > 0])
        self.config = {"n_modes": int(n_modes), "arch": arch, "blocks": list(blocks), "width": int(width),
                       "features": int(features), "hidden": list(hidden), "dropout": float(dropout),
                       "targets": self.targets}
        self.arch = arch
        make_backbone = lambda: ResNet(blocks, width, features)  # noqa: E731
        if arch == "shared":
            self.backbone = make_backbone()
            self.heads = nn.ModuleDict({t: Head(features, sizes[t], hidden, dropout) for t in self.targets})
        else:
            self.backbones = nn.ModuleDict({t: make_backbone() for t in self.targets})
            self.heads = nn.ModuleDict({t: Head(features, sizes[t], hidden, dropout) for t in self.targets})

    def forward(self, images):
        if images.dim() == 3:
            images = images[:, None]
        if self.arch == "shared":
            f = self.backbone(images)
            return {t: self.heads[t](f) for t in self.targets}
        return {t: self.heads[t](self.backbones[t](images)) for t in self.targets}


def build_network(config):
    """A :class:`DeepHEMNMANet` from its ``config`` dict (as stored in a model file)."""
    return DeepHEMNMANet(config["n_modes"], config["arch"], tuple(config["blocks"]), config["width"],
                         config["features"], tuple(config["hidden"]), config["dropout"], config.get("targets"))


def count_parameters(net):
    return sum(p.numel() for p in net.parameters())
