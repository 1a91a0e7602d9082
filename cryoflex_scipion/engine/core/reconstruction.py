"""Direct Fourier inversion from particles with known poses and CTF (torch).

Each particle image is re-centred (its content is moved back by the pose's
shift), zero-padded ``pad`` times and Fourier transformed, so that its samples
land one voxel apart in the padded 3D grid.  Samples are inserted along the
central plane ``A^T (kx, ky, 0)`` with trilinear weights:

    num += w * CTF * X,      den += w * CTF^2

and the map is ``num / (den + reg)``, inverse-transformed, cropped to the box,
and divided by the sinc^2 factor of the trilinear kernel (gridding
correction).  ``reg`` is a Wiener term per frequency shell: by default it is
derived from the FSC of the two half-maps (``reg = <den>_shell / SSNR``,
``SSNR = 2 FSC / (1 - FSC)``), so noiseless data are barely regularised and
noisy shells are damped.

Accumulators live on the chosen device; particles arrive in batches of any
size (streamed from disk by the caller), so memory does not grow with the
number of particles.
"""
import numpy as np
import torch

from .ctf import compute_ctf
from .fourier import fft_centered, freq_index, ifft_centered, radial_index, shift_images, sinc2_correction

__all__ = ["Backprojector"]


def _mirror(grid):
    """``grid[-k]`` for a centred, even-sized spectrum (index i -> P - i mod P)."""
    return torch.roll(torch.flip(grid, dims=(0, 1, 2)), shifts=(1, 1, 1), dims=(0, 1, 2))


class Backprojector:
    """Accumulate particles into ``n_halves`` Fourier-space half-reconstructions."""

    def __init__(self, size, apix, pad=2, n_halves=2, device="cpu", dtype=torch.float32):
        self.size, self.apix, self.pad, self.n_halves = size, apix, pad, n_halves
        self.padded = 2 * int(round(pad * size / 2))  # even: the Friedel mirror needs it
        self.device, self.dtype = torch.device(device), dtype
        n_vox = self.padded ** 3
        self.num = torch.zeros(n_halves * n_vox, 2, dtype=dtype, device=self.device)
        self.den = torch.zeros(n_halves * n_vox, dtype=dtype, device=self.device)
        self.count = np.zeros(n_halves, dtype=np.int64)
        k = freq_index(self.padded, self.device, dtype)
        ky, kx = torch.meshgrid(k, k, indexing="ij")
        # Keep the samples inside the sphere of the original Nyquist frequency, and
        # only the half plane kx >= 0: Friedel symmetry F(-k) = conj F(k) restores
        # the other half when the map is finalised (half the insertion work).
        self._mask = ((kx * kx + ky * ky) < (self.padded / 2 - 1) ** 2) & (kx >= 0)
        self._kxy = torch.stack([kx[self._mask], ky[self._mask]], -1)  # (M, 2)
        # The kx = 0 line is inserted once here and once more by the symmetrisation.
        self._sample_weight = torch.where(kx[self._mask] == 0, 0.5, 1.0).to(dtype)

    def insert(self, images, rotations, shifts_px=None, ctf_params=None, halves=None, ctf_absolute=False):
        """Add a batch of particles.

        Args:
            images: ``(N, D, D)`` particle images (projections moved by ``shifts_px``).
            rotations: ``(N, 3, 3)`` matrices of :mod:`geometry`.
            shifts_px: ``(N, 2)`` displacement of the content (``origin_to_shift``).
            ctf_params: :class:`CTFParams` for the batch, or None (no CTF).
            halves: ``(N,)`` half index of each particle (0 .. n_halves-1).
            ctf_absolute: images are phase-flipped: weight with |CTF| instead of CTF.
        """
        n, size, p = images.shape[0], self.size, self.padded
        imgs = images.to(self.device, self.dtype)
        if shifts_px is not None:
            imgs = shift_images(imgs, -torch.as_tensor(shifts_px, device=self.device, dtype=self.dtype))
        padded = torch.zeros(n, p, p, dtype=self.dtype, device=self.device)
        o = p // 2 - size // 2
        padded[:, o:o + size, o:o + size] = imgs
        spec = fft_centered(padded)[:, self._mask]  # (N, M) complex
        if ctf_params is not None:
            ctf = compute_ctf(ctf_params, p, self.apix, n=n, device=self.device, dtype=self.dtype)
            ctf = ctf[:, self._mask]
            if ctf_absolute:
                ctf = ctf.abs()
        else:
            ctf = torch.ones(n, spec.shape[1], dtype=self.dtype, device=self.device)
        rot = torch.as_tensor(rotations, device=self.device, dtype=self.dtype)
        coords = torch.einsum("mi,nij->nmj", self._kxy, rot[:, :2, :]) + p // 2  # (N, M, 3) as x, y, z
        halves = torch.zeros(n, dtype=torch.long, device=self.device) if halves is None else \
            torch.as_tensor(halves, dtype=torch.long, device=self.device)
        value = torch.view_as_real(spec * ctf * self._sample_weight)  # (N, M, 2)
        weight = ctf * ctf * self._sample_weight
        floor = torch.floor(coords)
        frac = coords - floor
        base = floor.long()
        offset = (halves * p ** 3)[:, None]
        # All eight trilinear corners are gathered before anything is added, so an
        # out-of-memory error leaves the accumulators untouched (the caller retries).
        idx_all, val_all, wt_all = [], [], []
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    wx = frac[..., 0] if dx else 1 - frac[..., 0]
                    wy = frac[..., 1] if dy else 1 - frac[..., 1]
                    wz = frac[..., 2] if dz else 1 - frac[..., 2]
                    w = wx * wy * wz
                    ix, iy, iz = base[..., 0] + dx, base[..., 1] + dy, base[..., 2] + dz
                    inside = (ix >= 0) & (ix < p) & (iy >= 0) & (iy < p) & (iz >= 0) & (iz < p)
                    idx_all.append(((iz * p + iy) * p + ix + offset)[inside])
                    val_all.append((value * w[..., None])[inside])
                    wt_all.append((weight * w)[inside])
        idx = torch.cat(idx_all)
        val = torch.cat(val_all)
        wt = torch.cat(wt_all)
        self.num.index_add_(0, idx, val)
        self.den.index_add_(0, idx, wt)
        for h in range(self.n_halves):
            self.count[h] += int((halves == h).sum())

    # -- finalisation ---------------------------------------------------------
    def _half(self, h):
        """Accumulators of half ``h`` completed by Friedel symmetry (flattened)."""
        p = self.padded
        n_vox = p ** 3
        sl = slice(h * n_vox, (h + 1) * n_vox)
        num = torch.view_as_complex(self.num[sl].contiguous()).reshape(p, p, p)
        den = self.den[sl].reshape(p, p, p)
        return (num + _mirror(num).conj()).reshape(-1), (den + _mirror(den)).reshape(-1)

    def _to_volume(self, num, den, reg):
        p, size = self.padded, self.size
        total = den + reg
        spec = torch.where(total > 0, num / total.clamp_min(1e-30), torch.zeros_like(num)).reshape(p, p, p)
        vol = ifft_centered(spec, 3)
        o = p // 2 - size // 2
        vol = vol[o:o + size, o:o + size, o:o + size]
        vol = vol / sinc2_correction(size, p, 3, self.device, self.dtype)
        return vol / self.apix

    def _shells(self):
        """Shell index (in original-box Fourier pixels) of every padded voxel."""
        r = radial_index(self.padded, 3, self.device).reshape(-1) / self.pad
        return torch.round(r).long().clamp(max=self.size)

    def reconstruct(self, wiener="fsc", floor=1e-3):
        """Half-maps, full map and FSC between the halves.

        ``wiener``: "fsc" (FSC-derived Wiener term per shell) or a constant
        relative to the mean weight.  ``floor``: minimum regulariser relative to
        the mean weight of each shell, which keeps unsampled voxels at zero.
        Returns a dict with ``half_maps`` (unfiltered: floor only), ``full_map``
        (Wiener-filtered) and ``fsc`` between the half-maps (per shell).
        """
        shells = self._shells()
        n_shells = self.size // 2 + 1
        halves = [self._half(h) for h in range(self.n_halves)]
        den_all = sum(d for _, d in halves)
        num_all = sum(nm for nm, _ in halves)

        def shell_mean(den):
            s = torch.zeros(self.size + 1, dtype=self.dtype, device=self.device).index_add_(0, shells, den)
            c = torch.zeros(self.size + 1, dtype=self.dtype, device=self.device).index_add_(
                0, shells, (den > 0).to(self.dtype))
            return s / c.clamp_min(1)

        def floor_reg(den):
            return (shell_mean(den) * floor)[shells]

        half_maps = [self._to_volume(nm, d, floor_reg(d)) for nm, d in halves]
        from .metrics import fsc as fsc_fn
        curve = fsc_fn(half_maps[0], half_maps[1]) if self.n_halves >= 2 else None
        if wiener == "fsc" and curve is not None:
            f = torch.as_tensor(curve, dtype=self.dtype, device=self.device).clamp(1e-3, 0.999)
            inv_ssnr = torch.empty(self.size + 1, dtype=self.dtype, device=self.device)
            inv_ssnr[:n_shells] = (1 - f) / (2 * f)
            inv_ssnr[n_shells:] = inv_ssnr[n_shells - 1]
            reg_full = torch.maximum(shell_mean(den_all)[shells] * inv_ssnr[shells], floor_reg(den_all))
        else:
            const = 0.0 if wiener == "fsc" else float(wiener)
            reg_full = torch.maximum(shell_mean(den_all)[shells] * const, floor_reg(den_all))
        full = self._to_volume(num_all, den_all, reg_full)
        return {"half_maps": half_maps, "full_map": full,
                "fsc": None if curve is None else np.asarray(curve)}
