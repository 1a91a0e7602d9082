"""Several conformations of the reference: elastic alignment against each, the best fit wins.

Real motion is never exactly a combination of a few normal modes of one structure.  On the DIMS closed ->
open AdK transition, modes 7-9 of the closed end leave 20-45 % of each frame's displacement unexplained,
and the alignment trades pose for that motion: 45 deg mean angular error on the most open fifth of the
particles, at SNR 0.1, although the same particles align to 1.7 deg against the open structure
(``benchmarks/bench_hemnma_real.py``).  A better search cannot fix it -- the wrong poses fit *better* than
the true ones -- only a reference nearer the particle's conformation can.

Users often know more than one conformation (the open and closed crystal structures, an AlphaFold model
and the fitted one, the ends of a morph or of an MD run).  :func:`reference_path` superposes them on the
reference and puts ``intermediates`` linear interpolations between consecutive ones; every conformation
moves along the *reference's* modes (with each structure's own modes the results were the same, so no
NMA is needed here).  :class:`MultiReferenceAligner` aligns each particle against every conformation
under one mask (so that the costs compare) and keeps the lowest cost.  Amplitudes are reported in the
reference's modes, ``q = U^T (x_k - x_0) + a`` (the modes are orthonormal), so that landscapes and
DeepHEMNMA read them as before; the index of the winning conformation is reported beside them.
"""
import dataclasses

import numpy as np

from ..core.metrics import kabsch
from .align import ElasticAligner
from .model import ElasticReference

__all__ = ["reference_path", "MultiReferenceAligner"]


def reference_path(reference, others=(), intermediates=1):
    """Conformations (K, A, 3): ``reference``, then for each of ``others`` (superposed on the reference by
    all atoms) ``intermediates`` linear interpolations from the previous conformation and the structure."""
    path = [np.asarray(reference, dtype=np.float64)]
    for other in others:
        other = np.asarray(other, dtype=np.float64)
        rot, t = kabsch(other, path[0])
        other = other @ rot.T + t
        start = path[-1]
        for k in range(1, intermediates + 1):
            f = k / (intermediates + 1.0)
            path.append((1.0 - f) * start + f * other)
        path.append(other)
    return np.stack(path)


class MultiReferenceAligner:
    """Aligns batches against the conformations ``path`` (K, A, 3) of one model (weights, modes (M, A, 3) of
    ``path[0]``), each placed by the same centre (``path[0]``'s centre of mass), under a mask wide enough for
    all."""

    def __init__(self, path, weights, modes, sigma, device, box, apix, settings):
        self.path = np.asarray(path, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        centre = (self.path[0] * w[:, None]).sum(0) / w.sum()
        self.modes = np.asarray(modes, dtype=np.float64)
        references = [ElasticReference(c - centre, weights, modes, sigma, device) for c in self.path]
        if len(references) > 1 and settings.mask_radius is None:
            settings = dataclasses.replace(settings, mask_radius=max(settings.mask_margin * r.radius() + 2 * r.sigma
                                                                     for r in references))
        self.aligners = [ElasticAligner(r, box, apix, settings) for r in references]
        # amplitudes of each conformation in path[0]'s modes
        self.offsets = np.einsum("kad,mad->km", self.path - self.path[0], self.modes) if len(self.modes) else \
            np.zeros((len(self.path), 0))

    @property
    def size(self):
        return self.aligners[0].size

    @property
    def bank(self):
        return self.aligners[0].bank

    @property
    def timings(self):
        total = {}
        for a in self.aligners:
            for k, v in a.timings.items():
                total[k] = total.get(k, 0.0) + v
        return total

    def align(self, images, ctf=None, init_euler=None, init_origin_a=None):
        """As :meth:`ElasticAligner.align`, plus ``reference`` (N,), the index of the winning conformation."""
        runs = [a.align(images, ctf, init_euler, init_origin_a) for a in self.aligners]
        if len(runs) == 1:
            out = runs[0]
            out["reference"] = np.zeros(len(out["cost"]), np.int64)
            return out
        cost = np.stack([r["cost"] for r in runs])
        best = np.where(np.isfinite(cost), cost, np.inf).argmin(0)
        pick = np.arange(len(best))
        out = {key: np.stack([r[key] for r in runs])[best, pick] for key in runs[0]}
        out["amplitudes"] = out["amplitudes"] + self.offsets[best]
        out["reference"] = best.astype(np.int64)
        return out
