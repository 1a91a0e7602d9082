"""Weighted k-means (Lloyd) for point sets of any dimension (numpy/scipy)."""
import numpy as np
from scipy.spatial import cKDTree

__all__ = ["kmeans"]


def kmeans(points, n_clusters, weights=None, seed=0, iterations=50):
    """Cluster ``points (P, d)`` into ``n_clusters``; returns ``(centres, labels)``.

    Seeding samples points with probability proportional to ``weights``
    (uniform by default); empty clusters restart on the point that is worst
    represented (largest weighted distance to its centre).
    """
    points = np.asarray(points, dtype=np.float64)
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = int(n_clusters)
    centres = points[rng.choice(len(points), size=n, replace=len(points) < n, p=w / w.sum())]
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(iterations):
        _, labels = cKDTree(centres).query(points)
        wsum = np.bincount(labels, weights=w, minlength=n)
        new = np.stack([np.bincount(labels, weights=w * points[:, k], minlength=n)
                        for k in range(points.shape[1])], -1)
        empty = wsum <= 0
        new[~empty] /= wsum[~empty, None]
        if empty.any():
            dist, _ = cKDTree(new[~empty]).query(points)
            new[empty] = points[np.argsort(-dist * w)[: empty.sum()]]
        converged = np.allclose(new, centres)
        centres = new
        if converged:
            break
    _, labels = cKDTree(centres).query(points)
    return centres, labels
