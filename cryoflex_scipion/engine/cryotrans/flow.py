"""The deformation: an autonomous velocity field (an MLP) integrated by forward Euler.

``x(t + 1/M) = x(t) + v(x(t)) / M`` for ``M`` steps takes the particles of
the initial map from ``t = 0`` to ``t = 1``; the intermediate positions are
the pseudo-trajectory.  With a partition of the initial map into ``K`` parts,
part ``k`` follows its own field ``v_k`` (particles keep their part along the
trajectory).  Positions are box units (:mod:`.density`).
"""
import torch
from torch import nn

__all__ = ["VelocityField", "Flow"]


class VelocityField(nn.Module):
    """MLP ``3 -> width -> ... -> 3`` (``depth`` linear layers), leaky ReLU (slope 0.01).

    Weights start from N(0, 0.01^2) and biases from 0 (as in CryoTRANS): the
    initial flow is almost the identity.
    """

    def __init__(self, width=100, depth=3):
        super().__init__()
        if depth < 2:
            raise ValueError("the velocity network needs at least 2 layers (depth >= 2)")
        sizes = [3] + [width] * (depth - 1) + [3]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = nn.functional.leaky_relu(layer(x), 0.01)
        return self.layers[-1](x)


class Flow(nn.Module):
    """``n_fields`` velocity fields integrated over ``steps`` Euler steps from t = 0 to 1."""

    def __init__(self, n_fields=1, width=100, depth=3, steps=10):
        super().__init__()
        self.fields = nn.ModuleList(VelocityField(width, depth) for _ in range(n_fields))
        self.steps = int(steps)
        self.config = {"n_fields": int(n_fields), "width": int(width), "depth": int(depth), "steps": int(steps)}

    def velocity(self, x, parts=None):
        """Velocities of positions ``x (P, 3)``; ``parts`` = list of ``(field, start, stop)`` slices."""
        if parts is None:
            return self.fields[0](x)
        return torch.cat([self.fields[k](x[start:stop]) for k, start, stop in parts])

    def forward(self, x, parts=None):
        for _ in range(self.steps):
            x = x + self.velocity(x, parts) / self.steps
        return x

    def trajectory(self, x, parts=None):
        """Positions at t = 0, 1/M, ..., 1 (``M + 1`` frames), without gradients."""
        frames = [x]
        with torch.no_grad():
            for _ in range(self.steps):
                x = x + self.velocity(x, parts) / self.steps
                frames.append(x)
        return frames


def part_slices(labels):
    """``(order, parts)``: a permutation sorting particles by part, and ``(part, start, stop)`` slices.

    Sorting once lets each field run on one contiguous block of particles.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    parts, start = [], 0
    for k, c in enumerate(counts.tolist()):
        if c:
            parts.append((k, start, start + c))
        start += c
    return order, parts
