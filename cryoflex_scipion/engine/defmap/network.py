"""The DEFMap network (Matsumoto et al. 2021): a 3D CNN from a 10^3 sub-voxel to log10 RMSF.

Three blocks Conv3D (64, 128, 256 filters, kernel 4) -> LeakyReLU -> MaxPool 2 -> Dropout 0.2,
then Dense 1024 -> LeakyReLU -> Dense 1024 -> LeakyReLU -> Dense 1: 5,774,785 parameters.

Padding, as Keras ``padding='same'`` everywhere:
- convolutions keep the size; for the even kernel 4 the padding is 1 voxel before and 2 after
  (as TensorFlow and torch's ``padding='same'`` split it; written as an explicit zero pad
  here, which avoids torch's warning about even kernels);
- pooling rounds up (``ceil_mode``): 10 -> 5 -> 3 -> 2, so the flattened features are
  256 * 2^3 = 2048, and the first dense layer has 2048 * 1024 + 1024 weights.  Only this
  combination gives the paper's parameter count.
LeakyReLU slope 0.3 (Keras's default, which the original used).
"""
from torch import nn

__all__ = ["DefmapNet", "N_PARAMETERS", "count_parameters"]

N_PARAMETERS = 5_774_785
LEAKY_SLOPE = 0.3


def _block(cin, cout):
    return [nn.ConstantPad3d((1, 2, 1, 2, 1, 2), 0.0), nn.Conv3d(cin, cout, kernel_size=4), nn.LeakyReLU(LEAKY_SLOPE),
            nn.MaxPool3d(2, ceil_mode=True), nn.Dropout(0.2)]


class DefmapNet(nn.Module):
    def __init__(self, box=10):
        super().__init__()
        self.box = box
        self.features = nn.Sequential(*_block(1, 64), *_block(64, 128), *_block(128, 256))
        side = box
        for _ in range(3):
            side = -(-side // 2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(256 * side ** 3, 1024), nn.LeakyReLU(LEAKY_SLOPE),
                                  nn.Linear(1024, 1024), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(1024, 1))

    def forward(self, subvoxels):
        """``(N, box, box, box)`` or ``(N, 1, box, box, box)`` -> ``(N,)``."""
        if subvoxels.dim() == 4:
            subvoxels = subvoxels[:, None]
        return self.head(self.features(subvoxels))[:, 0]


def count_parameters(net):
    return sum(p.numel() for p in net.parameters())
