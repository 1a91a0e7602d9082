"""Grouping of particles in a reduced space: k-means, Gaussian mixture, ranges, equal-population bins.

Every function returns an int array of group indices per particle (0-based; -1 = in no group).
"""
import re

import numpy as np

from ..core.clustering import gaussian_mixture, kmeans

__all__ = ["kmeans_groups", "gmm_groups", "range_groups", "quantile_groups", "keep_core", "parse_ranges"]


def kmeans_groups(points, k, seed=0):
    centres, labels = kmeans(points, k, seed=seed)
    return _order_along_first_axis(labels, centres)


def gmm_groups(points, k, seed=0):
    labels, _, means, _, _ = gaussian_mixture(points, k, seed=seed)
    return _order_along_first_axis(labels, means)


def _order_along_first_axis(labels, centres):
    """Renumber groups by increasing first coordinate of their centre (stable, readable numbering)."""
    order = np.argsort(centres[:, 0], kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels]


def parse_ranges(text):
    """'1:-900:-100, 2:0:50' -> [(axis 0, -900, -100), (axis 1, 0, 50)] (1-based axes, inclusive bounds)."""
    out = []
    for part in [p for p in re.split(r"[,;]", text) if p.strip()]:
        fields = part.strip().split(":")
        if len(fields) != 3:
            raise ValueError("range %r: write axis:min:max, e.g. 1:-900:-100" % part.strip())
        axis, low, high = int(fields[0]) - 1, float(fields[1]), float(fields[2])
        if axis < 0 or low > high:
            raise ValueError("range %r: axes start at 1 and min must not exceed max" % part.strip())
        out.append((axis, low, high))
    return out


def range_groups(points, specs):
    """One group per spec (a list of axis ranges that must all hold); the first matching spec wins."""
    points = np.asarray(points)
    labels = np.full(len(points), -1, dtype=np.int64)
    for g, spec in enumerate(specs):
        inside = np.ones(len(points), dtype=bool)
        for axis, low, high in spec:
            if axis >= points.shape[1]:
                raise ValueError("range on axis %d but the landscape has %d dimensions" % (axis + 1, points.shape[1]))
            inside &= (points[:, axis] >= low) & (points[:, axis] <= high)
        labels[inside & (labels < 0)] = g
    return labels


def quantile_groups(points, min_size, max_groups=None):
    """Equal-population groups along the first axis, each with at least ``min_size`` particles."""
    n = len(points)
    n_groups = n // int(min_size)
    if max_groups:
        n_groups = min(n_groups, int(max_groups))
    if n_groups < 1:
        raise ValueError("%d particles cannot make groups of at least %d" % (n, min_size))
    order = np.argsort(np.asarray(points)[:, 0], kind="stable")
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.arange(n) * n_groups // n
    return labels


def keep_core(points, labels, fraction):
    """Keep, in each group, the ``fraction`` of its particles closest to the group's median
    (the dense core); the rest become -1."""
    if fraction >= 1.0:
        return labels
    points = np.asarray(points)
    out = labels.copy()
    for g in np.unique(labels[labels >= 0]):
        members = np.nonzero(labels == g)[0]
        centre = np.median(points[members], axis=0)
        dist = np.linalg.norm(points[members] - centre, axis=1)
        keep = max(1, int(round(fraction * len(members))))
        out[members[np.argsort(dist)[keep:]]] = -1
    return out
