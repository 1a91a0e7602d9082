"""Weighted k-means (Lloyd) for point sets of any dimension (numpy/scipy)."""
import numpy as np
from scipy.spatial import cKDTree

__all__ = ["kmeans", "gaussian_mixture"]


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


def _log_densities(x, means, cov, weights):
    n, d = x.shape
    log_p = np.empty((n, len(means)))
    for j in range(len(means)):
        chol = np.linalg.cholesky(cov[j])
        z = np.linalg.solve(chol, (x - means[j]).T)
        log_det = 2 * np.log(np.diag(chol)).sum()
        log_p[:, j] = np.log(weights[j]) - 0.5 * ((z * z).sum(0) + log_det + d * np.log(2 * np.pi))
    top = log_p.max(1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(log_p - top).sum(1))
    return log_p, log_norm


def gaussian_mixture(points, n_components, seed=0, iterations=100, tolerance=1e-6, reg=1e-6, max_fit_points=200000):
    """Gaussian mixture with full covariances fitted by EM (k-means start).

    EM runs on at most ``max_fit_points`` randomly chosen points (a million particles would add
    nothing but time), then every point gets its responsibilities.  Returns ``(labels,
    responsibilities (P, K), means (K, d), covariances (K, d, d), weights (K,))``.
    """
    everything = np.asarray(points, dtype=np.float64)
    x = everything
    if len(x) > max_fit_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_fit_points, replace=False)]
    n, d = x.shape
    k = int(n_components)
    means, labels = kmeans(x, k, seed=seed)
    scale = np.var(x, axis=0).mean() * reg + 1e-12
    cov = np.stack([np.cov(x[labels == j].T) if (labels == j).sum() > d else np.cov(x.T) for j in range(k)])
    cov = cov.reshape(k, d, d) + scale * np.eye(d)
    weights = np.bincount(labels, minlength=k) / n + 1e-12
    previous = -np.inf
    for _ in range(iterations):
        log_p, log_norm = _log_densities(x, means, cov, weights)
        resp = np.exp(log_p - log_norm[:, None])
        likelihood = log_norm.mean()
        nk = resp.sum(0) + 1e-12
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        for j in range(k):
            c = x - means[j]
            cov[j] = (c * resp[:, j:j + 1]).T @ c / nk[j] + scale * np.eye(d)
        if abs(likelihood - previous) < tolerance:
            break
        previous = likelihood
    log_p, log_norm = _log_densities(everything, means, cov, weights)
    resp = np.exp(log_p - log_norm[:, None])
    return resp.argmax(1), resp, means, cov, weights
