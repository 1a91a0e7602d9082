"""Global search of orientation and shift against projections of the reference (one GEMM per batch).

Templates are projections of the (undeformed) reference for directions ``(rot, tilt)`` of a
nearly uniform sphere grid, at a small search size.  Each particle image is first matched-filtered
by its own CTF (multiplied by CTF, or |CTF| for phase-flipped images), then resampled for every
candidate in-plane angle ``psi`` and shift ``s`` so that it lines up with the templates:
``T(p') = J(Rz(psi) p' + s)``.  All (psi, shift) copies of all images against all templates is
one matrix product; scores are divided by ``||CTF T||`` (estimated from radial power spectra), so
they approximate the normalised correlation of the image with the CTF-modulated projection.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..core.fourier import fft_centered, freq_index, ifft_centered, radial_index, soft_mask
from ..core.geometry import euler_to_matrix, sphere_directions

__all__ = ["TemplateBank", "search_orientations"]


def _radial_means(spectra_sq, size):
    """Radial mean of squared spectra (..., S, S) -> (..., S//2 + 1)."""
    shells = torch.round(radial_index(size, 2, spectra_sq.device)).long().clamp(max=size // 2).reshape(-1)
    flat = spectra_sq.reshape(-1, size * size)
    sums = torch.zeros(flat.shape[0], size // 2 + 1, dtype=flat.dtype, device=flat.device)
    sums.index_add_(1, shells, flat)
    counts = torch.bincount(shells, minlength=size // 2 + 1).to(flat.dtype)
    return (sums / counts).reshape(*spectra_sq.shape[:-2], size // 2 + 1)


class TemplateBank:
    """Masked, zero-mean projections of the reference over a sphere grid, at the search size.

    With ``amplitudes`` (a (G, M) grid of normal-mode amplitudes), every direction is projected for
    every deformation, so that large motions start the refinement near the right conformation.
    Template ``t`` has direction ``t // G`` and amplitudes ``amplitudes[t % G]``.
    """

    def __init__(self, reference, step_deg, size, apix, mask_radius_px, amplitudes=None, batch=256):
        self.directions = sphere_directions(step_deg)
        self.step = step_deg
        self.size, self.apix = size, apix
        device, dtype = reference.device, reference.dtype
        if amplitudes is None:
            amplitudes = np.zeros((1, reference.n_modes))
        self.amplitudes = torch.as_tensor(np.asarray(amplitudes, dtype=np.float64), device=device, dtype=dtype)
        g = self.amplitudes.shape[0]
        self.mask = soft_mask(size, mask_radius_px, 2, 2.0, device).to(dtype)
        euler = np.concatenate([self.directions, np.zeros((len(self.directions), 1))], 1)
        rot = torch.as_tensor(euler_to_matrix(euler), device=device, dtype=dtype)
        rot = rot[:, None].expand(-1, g, 3, 3).reshape(-1, 3, 3)
        amps = self.amplitudes[None].expand(len(self.directions), g, -1).reshape(-1, reference.n_modes)
        templates, powers = [], []
        for start in range(0, len(rot), batch):
            proj = reference.project(rot[start:start + batch], None, amps[start:start + batch], size, apix)
            powers.append(_radial_means(fft_centered(proj).abs() ** 2, size))
            masked = proj * self.mask
            masked = (masked - (masked.sum((1, 2), keepdim=True) / self.mask.sum()) * self.mask)
            templates.append(masked.reshape(len(masked), -1))
        self.templates = torch.cat(templates)     # (D * G, S*S)
        self.power = torch.cat(powers)            # (D * G, R) radial power of the unmasked projections

    @property
    def n_deformations(self):
        return self.amplitudes.shape[0]


class _tf32:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True

    def __exit__(self, *_):
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.saved


def _transform_grid(psi_deg, shifts_px, size, device, dtype):
    """Sampling grids (P*T, S, S, 2) for T(p') = J(Rz(psi) p' + s), all psi x shift pairs."""
    k = freq_index(size, device, dtype)
    yy, xx = torch.meshgrid(k, k, indexing="ij")
    a = torch.deg2rad(torch.as_tensor(psi_deg, device=device, dtype=dtype))
    c, s = torch.cos(a)[:, None, None, None], torch.sin(a)[:, None, None, None]
    sx = shifts_px[:, 0].to(device, dtype)[None, :, None, None]
    sy = shifts_px[:, 1].to(device, dtype)[None, :, None, None]
    x = c * xx + s * yy + sx  # Rz(psi) = [[c, s], [-s, c]] (passive convention of geometry)
    y = -s * xx + c * yy + sy
    scale = 2.0 / (size - 1)
    grid = torch.stack([(x + size // 2) * scale - 1, (y + size // 2) * scale - 1], -1)
    return grid.reshape(-1, size, size, 2)


def search_orientations(images, filters, bank, psi_step, max_shift_px, top_k=3, chunk=32):
    """Best ``top_k`` orientations per image (distinct directions).

    Args:
        images: (N, S, S) particle images at the search size.
        filters: (N, S, S) per-image matched filters (CTF, |CTF| or ones), centred spectrum layout.
        bank: :class:`TemplateBank` at the same size.
        psi_step: in-plane step in degrees; max_shift_px: shift range in search pixels.
    Returns dict of tensors: euler (N, K, 3) degrees, shift_px (N, K, 2) (content shifts at the
    search size), amplitudes (N, K, M), score (N, K).
    """
    device, dtype = images.device, images.dtype
    size = bank.size
    n_psi = max(1, int(round(360.0 / psi_step)))
    psi = torch.arange(n_psi, device=device, dtype=dtype) * (360.0 / n_psi)
    r = int(math.floor(max_shift_px))
    grid_1d = torch.arange(-r, r + 1, device=device, dtype=dtype)
    sy, sx = torch.meshgrid(grid_1d, grid_1d, indexing="ij")
    keep = (sx ** 2 + sy ** 2) <= max_shift_px ** 2 + 1e-6
    shifts = torch.stack([sx[keep], sy[keep]], -1)
    grids = _transform_grid(psi, shifts, size, device, dtype)        # (P*T, S, S, 2)
    n_tr = grids.shape[0]

    spec = fft_centered(images)
    spec[..., size // 2, size // 2] = 0                                # no DC
    filtered = ifft_centered(spec * filters)
    ctf_power = _radial_means(filters * filters, size)                 # (N, R)
    norm = torch.sqrt((ctf_power @ bank.power.T).clamp_min(1e-30))    # (N, D) ~ ||CTF T||

    best = {"score": [], "index": []}
    templates = bank.templates.to(dtype)
    for start in range(0, images.shape[0], chunk):
        img = filtered[start:start + chunk]
        n = img.shape[0]
        src = img[:, None].expand(n, n_tr, size, size).reshape(n * n_tr, 1, size, size)
        moved = F.grid_sample(src, grids.repeat(n, 1, 1, 1), mode="bilinear", padding_mode="zeros",
                              align_corners=True).reshape(n, n_tr, -1) * bank.mask.reshape(1, 1, -1)
        with _tf32(device):  # scores only rank candidates: TF32 tensor cores are precise enough
            scores = torch.matmul(moved, templates.T) / norm[start:start + n, None, :]   # (n, P*T, D*G)
        n_dir = len(bank.directions)
        scores = scores.reshape(n, n_tr, n_dir, bank.n_deformations).permute(0, 1, 3, 2)
        per_dir, arg = scores.reshape(n, n_tr * bank.n_deformations, n_dir).max(dim=1)  # best psi/shift/q per direction
        best["score"].append(per_dir)
        best["index"].append(arg)
    per_dir = torch.cat(best["score"])   # (N, D)
    arg = torch.cat(best["index"])       # (N, D)
    return _top_candidates(per_dir, arg, psi, shifts, bank, top_k)


def _top_candidates(per_dir, arg, psi, shifts, bank, top_k):
    """``arg`` indexes (transform, deformation) pairs: transform * G + deformation."""
    n, n_dir = per_dir.shape
    dev, dt = per_dir.device, per_dir.dtype
    dirs = torch.as_tensor(bank.directions, device=dev, dtype=dt)
    rad = torch.deg2rad(dirs)
    unit = torch.stack([torch.sin(rad[:, 1]) * torch.cos(rad[:, 0]), torch.sin(rad[:, 1]) * torch.sin(rad[:, 0]),
                        torch.cos(rad[:, 1])], -1)
    n_cand = min(n_dir, 8 * top_k)
    cand = torch.topk(per_dir, n_cand, dim=1).indices                      # (N, C), best first
    cos = torch.einsum("nci,ndi->ncd", unit[cand], unit[cand])             # (N, C, C)
    # Greedy non-maximum suppression, vectorised over particles: a direction is skipped when a
    # better one was picked within two grid steps.
    cos_limit = math.cos(math.radians(2 * bank.step))
    available = torch.ones(n, n_cand, dtype=torch.bool, device=dev)
    rows = torch.arange(n, device=dev)
    picks, last = [], torch.zeros(n, dtype=torch.long, device=dev)
    for _ in range(top_k):
        has = available.any(dim=1)
        first = torch.argmax(available.to(torch.int8), dim=1)
        pick = torch.where(has, first, last)
        picks.append(pick)
        available &= cos[rows, pick] < cos_limit
        last = pick
    chosen = torch.gather(cand, 1, torch.stack(picks, 1))                 # (N, K) direction indices
    n_shift, n_def = shifts.shape[0], bank.n_deformations
    flat = torch.gather(arg, 1, chosen)
    transform, deform_idx = flat // n_def, flat % n_def
    psi_idx, shift_idx = transform // n_shift, transform % n_shift
    euler = torch.stack([dirs[chosen, 0], dirs[chosen, 1], psi[psi_idx]], -1)
    return {"euler": euler, "shift_px": shifts[shift_idx], "amplitudes": bank.amplitudes[deform_idx],
            "score": torch.gather(per_dir, 1, chosen)}
