"""Quantities derived from normal modes: collectivity, overlaps, fluctuations, scores."""
import numpy as np

__all__ = ["collectivity", "overlap", "cumulative_overlap", "square_fluctuations", "predicted_bfactors",
           "mode_scores", "pearson"]


def collectivity(vectors):
    """Bruschweiler's degree of collectivity of each mode (M, A, 3) -> (M,), in (0, 1].

    ``kappa = exp(-sum_i p_i ln p_i) / A`` with ``p_i`` the fraction of the
    mode's squared norm carried by atom ``i``.
    """
    sq = (np.asarray(vectors) ** 2).sum(-1)
    p = sq / sq.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return np.exp(entropy) / sq.shape[-1]


def overlap(vectors, displacement):
    """|cosine| between each mode and a displacement (A, 3) -> (M,)."""
    v = np.asarray(vectors).reshape(len(vectors), -1)
    d = np.asarray(displacement).reshape(-1)
    return np.abs(v @ d) / (np.linalg.norm(v, axis=1) * np.linalg.norm(d))


def cumulative_overlap(vectors, displacement):
    """sqrt of the running sum of squared overlaps (valid for orthonormal modes)."""
    return np.sqrt(np.cumsum(overlap(vectors, displacement) ** 2))


def square_fluctuations(vectors, eigenvalues, first=6):
    """Per-atom mean-square fluctuation predicted by modes ``first`` onwards: sum_k |v_k,i|^2 / lambda_k."""
    v = np.asarray(vectors)[first:]
    lam = np.asarray(eigenvalues)[first:]
    return ((v ** 2).sum(-1) / lam[:, None]).sum(0)


def predicted_bfactors(vectors, eigenvalues, first=6):
    """B-factors up to a global scale: 8 pi^2 / 3 * <dr^2>."""
    return 8 * np.pi ** 2 / 3 * square_fluctuations(vectors, eigenvalues, first)


def pearson(a, b):
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def mode_scores(collectivities):
    """ContinuousFlex's ranking score of each mode (lower is better).

    ``score_j = (j + rank_j + 2) / (2 M)`` with ``j`` the 0-based mode index
    (increasing eigenvalue) and ``rank_j`` the 0-based rank of its
    collectivity (most collective first), over all ``M`` modes; identical to
    ContinuousFlex and ProDy's ``calcScipionScore``.
    """
    col = np.asarray(collectivities, dtype=np.float64)
    m = len(col)
    rank = np.empty(m)
    rank[np.argsort(-col, kind="stable")] = np.arange(m)
    return (np.arange(m) + rank + 2) / (2.0 * m)
