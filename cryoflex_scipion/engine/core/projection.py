"""Batched projectors (torch), following the conventions of :mod:`geometry`.

* :func:`project_gaussians`: exact projection of isotropic 3D Gaussians
  (atoms, pseudoatoms) integrated over each pixel with ``erf``; separable, so
  a batch is one matrix product per image.  Differentiable in coordinates,
  weights, widths, rotations and shifts.
* :func:`gaussian_volume`: the same Gaussians integrated over voxels.
* :class:`FourierProjector`: central slices of a padded, gridding-corrected
  volume spectrum (trilinear interpolation); differentiable in the volume and
  in the rotations.
* :func:`project_volume_real`: rotate the volume by trilinear sampling and
  integrate along z.

Units: a volume holds a density per A^3 and an image a projected density per
A^2 (line integral), so every projector returns the same numbers for the same
object.
"""
import math
import os

import torch
import torch.nn.functional as F

from .fourier import fft_centered, freq_index, ifft_centered, shift_images, sinc2_correction

__all__ = ["project_gaussians", "gaussian_volume", "FourierProjector", "project_volume_real"]

_SQRT2 = math.sqrt(2.0)


def _erf_differences(edges, pos, scale):
    cdf = torch.erf((edges - pos[..., None]) * scale)
    return 0.5 * (cdf[..., 1:] - cdf[..., :-1])


_FUSED = {}


def _fused_erf_differences():
    """``_erf_differences`` compiled into one GPU kernel (torch.compile), which writes the (.., A, D)
    result once instead of five times; None where compilation is unavailable or disabled
    (CRYOFLEX_COMPILE=0)."""
    if "fn" not in _FUSED:
        _FUSED["fn"] = None
        if os.environ.get("CRYOFLEX_COMPILE", "1") != "0":
            try:
                _FUSED["fn"] = torch.compile(_erf_differences, dynamic=True)
            except Exception:  # no compiler backend: keep the eager version
                _FUSED["fn"] = None
    return _FUSED["fn"]


def _pixel_integrals(centres, pos, sigma, apix):
    """Fraction of a 1D Gaussian at ``pos`` (..., A) falling in each pixel (..., A, D).

    One erf per pixel edge, differenced.  On a GPU the whole expression is one fused kernel
    when torch.compile works there (it is memory-bound: the output is the only large array).
    """
    edges = torch.cat([centres - 0.5 * apix, centres[-1:] + 0.5 * apix])
    scale = 1.0 / (sigma * _SQRT2)
    if torch.is_tensor(scale) and scale.ndim > 0:
        scale = scale[..., None]
    if pos.is_cuda:
        fused = _fused_erf_differences()
        if fused is not None:
            try:
                return fused(edges, pos, scale)
            except Exception:  # a compilation failure at run time: fall back for good
                _FUSED["fn"] = None
    return _erf_differences(edges, pos, scale)


def project_gaussians(coords, weights, sigma, rotations, size, apix, shifts_px=None, atom_chunk=4096):
    """Project Gaussians for ``N`` poses.

    Args:
        coords: ``(A, 3)`` or ``(N, A, 3)`` centres in A (box frame, x y z).
        weights: ``(A,)`` or ``(N, A)`` integrated weight of each Gaussian.
        sigma: scalar or ``(A,)`` standard deviation in A.
        rotations: ``(N, 3, 3)`` matrices ``A`` of :mod:`geometry`.
        size, apix: output box (pixels) and pixel size (A).
        shifts_px: optional ``(N, 2)`` displacement of the image content in pixels
            (applied analytically, so it stays differentiable and exact).
    Returns:
        ``(N, size, size)`` projected density per A^2.
    """
    n = rotations.shape[0]
    dtype, device = rotations.dtype, rotations.device
    coords = coords.to(dtype)
    weights = torch.as_tensor(weights, dtype=dtype, device=device)
    sigma = torch.as_tensor(sigma, dtype=dtype, device=device)
    centres = freq_index(size, device, dtype) * apix
    out = torch.zeros(n, size, size, dtype=dtype, device=device)
    n_atoms = coords.shape[-2]
    for start in range(0, n_atoms, atom_chunk):
        sl = slice(start, min(start + atom_chunk, n_atoms))
        c = coords[..., sl, :]
        # p = A r for every atom: (N, A, 3)
        p = torch.einsum("nij,...aj->nai", rotations, c) if c.ndim == 2 else torch.einsum("nij,naj->nai", rotations, c)
        x, y = p[..., 0], p[..., 1]
        if shifts_px is not None:
            x = x + shifts_px[:, 0:1].to(dtype) * apix
            y = y + shifts_px[:, 1:2].to(dtype) * apix
        sig = sigma[sl] if sigma.ndim > 0 else sigma
        gx = _pixel_integrals(centres, x, sig, apix)  # (N, A, D)
        gy = _pixel_integrals(centres, y, sig, apix)
        w = weights[..., sl]
        w = w.expand(n, -1) if w.ndim == 1 else w
        out = out + torch.bmm((gy * w[..., None]).transpose(1, 2), gx)
    return out / (apix * apix)


def gaussian_volume(coords, weights, sigma, size, apix, atom_chunk=2048):
    """Density per A^3 of Gaussians integrated over the voxels of a ``size``^3 box."""
    coords = torch.as_tensor(coords)
    dtype, device = coords.dtype, coords.device
    weights = torch.as_tensor(weights, dtype=dtype, device=device)
    sigma = torch.as_tensor(sigma, dtype=dtype, device=device)
    centres = freq_index(size, device, dtype) * apix
    vol = torch.zeros(size, size, size, dtype=dtype, device=device)
    for start in range(0, coords.shape[0], atom_chunk):
        sl = slice(start, min(start + atom_chunk, coords.shape[0]))
        sig = sigma[sl] if sigma.ndim > 0 else sigma
        gx = _pixel_integrals(centres, coords[sl, 0], sig, apix)
        gy = _pixel_integrals(centres, coords[sl, 1], sig, apix)
        gz = _pixel_integrals(centres, coords[sl, 2], sig, apix) * weights[sl, None]
        vol += torch.einsum("az,ay,ax->zyx", gz, gy, gx)
    return vol / apix ** 3


class FourierProjector:
    """Projections by central slices of the volume's spectrum.

    The volume is zero-padded ``pad`` times and pre-divided by the sinc^2
    factor of trilinear interpolation, so slices are accurate to a few 1e-3.
    Keep the object to project the same volume many times.
    """

    def __init__(self, volume, apix, pad=2):
        size = volume.shape[-1]
        self.size, self.apix, self.pad = size, apix, pad
        self.padded = int(pad * size)
        corrected = volume / sinc2_correction(size, self.padded, 3, volume.device, volume.dtype)
        vol_pad = torch.zeros((self.padded,) * 3, dtype=volume.dtype, device=volume.device)
        o = self.padded // 2 - size // 2
        vol_pad[o:o + size, o:o + size, o:o + size] = corrected
        spec = fft_centered(vol_pad, 3)
        # (1, 2, P, P, P): real and imaginary parts as channels for grid_sample.
        self._spec = torch.stack([spec.real, spec.imag])[None]
        k = freq_index(size, volume.device, volume.dtype)
        ky, kx = torch.meshgrid(k, k, indexing="ij")
        self._k2d = torch.stack([kx, ky], -1)  # (D, D, 2): (kx, ky) of the image spectrum

    def slices(self, rotations):
        """Centred image spectra ``(N, D, D)`` (complex) for rotations ``(N, 3, 3)``."""
        rot = rotations.to(self._spec.dtype)
        # 3D frequency = pad * A^T (kx, ky, 0): sum over the first two rows of A.
        k3 = torch.einsum("yxi,nij->nyxj", self._k2d, rot[:, :2, :]) * self.pad
        c = self.padded // 2
        grid = (k3 + c) * (2.0 / (self.padded - 1)) - 1.0  # align_corners=True
        out = F.grid_sample(self._spec, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)
        spec = torch.complex(out[0, 0], out[0, 1])
        # FT of the padded volume sums voxels; an image sums line integrals (x apix).
        return spec * self.apix

    def project(self, rotations, shifts_px=None):
        """Real-space projections ``(N, D, D)``; optional content shifts in pixels."""
        imgs = ifft_centered(self.slices(rotations))
        if shifts_px is not None:
            imgs = shift_images(imgs, shifts_px)
        return imgs


def project_volume_real(volume, rotations, apix, shifts_px=None, chunk=8):
    """Projection by trilinear rotation of the volume and a sum along z."""
    size = volume.shape[-1]
    dtype, device = volume.dtype, volume.device
    k = freq_index(size, device, dtype)
    zz, yy, xx = torch.meshgrid(k, k, k, indexing="ij")
    p = torch.stack([xx, yy, zz], -1)  # frame of the projection
    outs = []
    for start in range(0, rotations.shape[0], chunk):
        rot = rotations[start:start + chunk].to(dtype)
        # sample V at r = A^T p
        r = torch.einsum("zyxi,nij->nzyxj", p, rot)
        grid = (r + size // 2) * (2.0 / (size - 1)) - 1.0
        vol = volume[None, None].expand(rot.shape[0], 1, -1, -1, -1)
        rotated = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        outs.append(rotated[:, 0].sum(1) * apix)
    imgs = torch.cat(outs)
    if shifts_px is not None:
        imgs = shift_images(imgs, shifts_px)
    return imgs
