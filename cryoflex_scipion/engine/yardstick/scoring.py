"""Scoring against a yardstick's ground truth: per-image FSC / AU-FSC (CryoBench's definition,
:mod:`..core.metrics`) of any method's per-image volumes, and rank correlations of latents with
the frame index and the LID-NMP distance.
"""
from collections import OrderedDict

import numpy as np
import torch

from ..core.metrics import fsc_curves, per_image_au_fsc, spearman

__all__ = ["GroundTruthMaps", "score_volumes", "latent_pc1", "latent_correlations"]


class GroundTruthMaps:
    """Ground-truth maps of a :class:`.pipeline.Dataset`, computed on demand and cached (``keep`` maps)."""

    def __init__(self, dataset, device="cpu", keep=16):
        self.dataset, self.device, self.keep = dataset, device, keep
        self._cache = OrderedDict()

    def __call__(self, frame):
        frame = int(frame)
        if frame in self._cache:
            self._cache.move_to_end(frame)
            return self._cache[frame]
        vol = self.dataset.frame_map(frame, self.device, torch.float64)
        self._cache[frame] = vol
        if len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return vol


def score_volumes(dataset, frames, volumes, mask=None, device="cpu", gt_maps=None, masks=None):
    """Per-image CryoBench FSC of ``volumes`` (an iterable of ``(D, D, D)`` arrays or tensors, one per
    image, read once) against the ground-truth map of each image's frame (``frames``); returns
    ``(curves (N, D//2), summary)`` (:func:`..core.metrics.per_image_au_fsc`, per frame under
    ``per_label``).  ``mask`` multiplies both volumes of every pair; ``masks`` (name -> mask): more
    summaries of the same volumes under ``summary["masked"][name]`` (without per-image values)."""
    gt = gt_maps or GroundTruthMaps(dataset, device)
    masks = dict(masks or {})
    curves, masked = [], {name: [] for name in masks}
    for vol, frame in zip(volumes, frames):
        v = torch.as_tensor(np.asarray(vol) if not torch.is_tensor(vol) else vol, device=device, dtype=torch.float64)
        if tuple(v.shape) != (dataset.size,) * 3:
            raise ValueError("a volume of shape %s against ground-truth maps of %d^3" % (tuple(v.shape), dataset.size))
        truth = gt(frame)
        curves.append(fsc_curves(v, truth, mask=mask, device=device))
        for name, m in masks.items():
            masked[name].append(fsc_curves(v, truth, mask=m, device=device))
    curves = np.asarray(curves)
    if len(curves) != len(frames):
        raise ValueError("%d volumes for %d images" % (len(curves), len(frames)))
    summary = per_image_au_fsc(curves, dataset.apix, labels=frames)
    if masks:
        summary["masked"] = {}
        for name, c in masked.items():
            summary["masked"][name] = per_image_au_fsc(np.asarray(c), dataset.apix)
            summary["masked"][name].pop("values")
    return curves, summary


def latent_pc1(latents):
    """First principal component of ``latents`` ``(N, d)`` (the values themselves for d = 1)."""
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim == 1:
        return z
    if z.shape[1] == 1:
        return z[:, 0]
    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt[0]


def latent_correlations(latents, frames, lid_nmp=None):
    """Spearman rho of the latents' PC1 with the frame index (and the LID-NMP distance); the sign of a
    principal component is arbitrary, so |rho| is what to compare (the signed values are given too)."""
    pc1 = latent_pc1(latents)
    out = {"rho_pc1_frame": spearman(pc1, frames)}
    out["abs_rho_pc1_frame"] = abs(out["rho_pc1_frame"])
    if lid_nmp is not None:
        out["rho_pc1_lid_nmp"] = spearman(pc1, lid_nmp)
        out["abs_rho_pc1_lid_nmp"] = abs(out["rho_pc1_lid_nmp"])
    return out
