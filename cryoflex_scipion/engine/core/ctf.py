"""Contrast transfer function (RELION convention), phase flipping, Wiener filtering.

For spatial frequency ``s`` (1/A) at angle ``alpha`` in the image plane:

    lambda   = 12.2639 / sqrt(V + 0.97845e-6 V^2)        (A; V in volts)
    defocus  = (dU + dV)/2 + (dU - dV)/2 * cos(2 (alpha - astig_angle))   (A, >0 underfocus)
    chi      = pi * lambda * defocus * s^2 - pi/2 * Cs * lambda^3 * s^4 + phase_shift
    CTF      = -(-sqrt(1 - w^2) sin(chi) - w cos(chi)) = sqrt(1 - w^2) sin(chi) + w cos(chi)
    CTF     *= scale * exp(-B s^2 / 4)

so that ``CTF(0) = w > 0``: particles keep their (RELION, contrast-inverted)
white-on-black appearance after multiplication.  This equals RELION's
``CTF::getCTF`` and is the negative of cryoDRGN's ``compute_ctf`` (which uses
``gamma = -chi`` and ``sqrt(1-w^2) sin(gamma) - w cos(gamma)``); the
wavelength formula is the same in all three.  ``alpha`` and the astigmatism
angle are measured from the image x axis towards y.
"""
import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from .fourier import fft_centered, freq_grid_2d, ifft_centered

__all__ = ["CTFParams", "electron_wavelength", "compute_ctf", "apply_ctf", "phase_flip", "wiener_filter"]


def electron_wavelength(voltage_kv):
    """Relativistic electron wavelength in A for an accelerating voltage in kV."""
    v = voltage_kv * 1000.0
    return 12.2639 / (v + 0.97845e-6 * v * v) ** 0.5


@dataclass
class CTFParams:
    """Per-particle CTF parameters (arrays of length N, or scalars).

    Units as in RELION STAR files: defocus in A, angle in degrees, voltage in
    kV, Cs in mm, phase shift in degrees, B-factor in A^2.
    """
    defocus_u: object
    defocus_v: object
    defocus_angle: object = 0.0
    voltage: object = 300.0
    cs: object = 2.7
    amplitude_contrast: object = 0.1
    phase_shift: object = 0.0
    bfactor: object = 0.0
    scale: object = 1.0

    def subset(self, index):
        """Parameters of the particles in ``index`` (scalars are kept)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v[index] if np.ndim(v) > 0 else v
        return CTFParams(**out)

    def tensors(self, n, device=None, dtype=torch.float32):
        """Dict of ``(n,)`` tensors, broadcasting scalars."""
        return {f.name: torch.as_tensor(np.broadcast_to(np.asarray(getattr(self, f.name), dtype=np.float64), (n,)).copy(),
                                        dtype=dtype, device=device) for f in fields(self)}


def compute_ctf(params, size, apix, n=None, device=None, dtype=torch.float32):
    """CTF images ``(N, size, size)`` in the centred spectrum layout of :mod:`fourier`."""
    if n is None:
        n = max(int(np.size(params.defocus_u)), 1)
    p = params.tensors(n, device=device, dtype=torch.float64)
    ky, kx = freq_grid_2d(size, apix, device=device, dtype=torch.float64)
    s2 = kx * kx + ky * ky
    alpha = torch.atan2(ky, kx)
    lam = electron_wavelength(p["voltage"])[:, None, None]
    cs_a = (p["cs"] * 1e7)[:, None, None]
    d_u, d_v = p["defocus_u"][:, None, None], p["defocus_v"][:, None, None]
    astig = torch.deg2rad(p["defocus_angle"])[:, None, None]
    defocus = 0.5 * (d_u + d_v) + 0.5 * (d_u - d_v) * torch.cos(2 * (alpha - astig))
    chi = math.pi * lam * defocus * s2 - 0.5 * math.pi * cs_a * lam ** 3 * s2 * s2 \
        + torch.deg2rad(p["phase_shift"])[:, None, None]
    w = p["amplitude_contrast"][:, None, None]
    ctf = torch.sqrt(1 - w * w) * torch.sin(chi) + w * torch.cos(chi)
    ctf = ctf * p["scale"][:, None, None] * torch.exp(-p["bfactor"][:, None, None] * s2 / 4)
    return ctf.to(dtype)


def apply_ctf(images, ctf):
    """Multiply the spectra of ``images`` by ``ctf`` (same centred layout)."""
    return ifft_centered(fft_centered(images) * ctf)


def phase_flip(images, ctf):
    """Correct the CTF's phase reversals only: multiply spectra by sign(CTF)."""
    return ifft_centered(fft_centered(images) * torch.sign(ctf))


def wiener_filter(images, ctf, snr=1.0):
    """Wiener deconvolution ``F * CTF / (CTF^2 + 1/snr)`` (per-image constant SNR)."""
    snr = torch.as_tensor(snr, dtype=ctf.dtype, device=ctf.device)
    if snr.ndim == 1:
        snr = snr[:, None, None]
    return ifft_centered(fft_centered(images) * ctf / (ctf * ctf + 1.0 / snr))
