"""Dimension reduction of per-particle flexibility coordinates (amplitudes or latents)."""
from dataclasses import dataclass

import numpy as np

__all__ = ["Projector", "fit_pca", "fit_umap"]


@dataclass
class Projector:
    """``z_red = (z - mean) / scale @ components.T``; saved with the results so new particles
    (or animations) map to the same space."""
    method: str
    mean: np.ndarray          # (M,)
    scale: np.ndarray         # (M,) 1 unless standardised
    components: np.ndarray    # (d, M) rows: principal axes (PCA)
    explained: np.ndarray     # (d,) variance along each axis

    def transform(self, features):
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.components.T

    def inverse(self, reduced):
        return np.asarray(reduced, dtype=np.float64) @ self.components * self.scale + self.mean

    def save(self, path, **extra):
        np.savez(path, method=self.method, mean=self.mean, scale=self.scale, components=self.components,
                 explained=self.explained, **extra)


def fit_pca(features, dims=2, standardise=False):
    """PCA by SVD of the centred features; the sign of each axis makes its largest loading positive."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("PCA needs at least two particles with flexibility coordinates")
    dims = min(int(dims), x.shape[1])
    mean = x.mean(0)
    scale = x.std(0) if standardise else np.ones(x.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    centred = (x - mean) / scale
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:dims]
    comps = comps * np.sign(comps[np.arange(dims), np.abs(comps).argmax(1)])[:, None]
    explained = (s[:dims] ** 2) / (len(x) - 1)
    return Projector("pca", mean, scale, comps, explained)


def fit_umap(features, dims=2, seed=0):
    """UMAP embedding (optional dependency ``umap-learn``); returns (embedding, None)."""
    try:
        import umap
    except ImportError as exc:
        raise ImportError("UMAP needs the optional package umap-learn (pip install umap-learn)") from exc
    return umap.UMAP(n_components=dims, random_state=seed).fit_transform(np.asarray(features)), None
