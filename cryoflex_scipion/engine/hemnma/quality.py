"""How well the elastic model explains each particle: its correlation against the correlation a perfect
model would reach on that image.

The refinement maximises the masked correlation ``c`` between the image and the CTF-modulated model.  Its
value alone says little: it falls with the noise (SNR, defocus, ice), so a particle of the reference
conformation at high defocus can score lower than a badly explained one in thin ice.  For an image
``y = s + n`` with white noise of variance ``v``, a model equal to the signal ``s`` reaches
``c* = |s| / |y| = sqrt(1 - v |m|^2 / |y|^2)`` inside the (soft) mask ``m``; ``v`` is measured on the image's
own background (the pixels the mask leaves out).  The **fit quality** ``c / c*`` is about 1 when the modes
explain the particle up to noise, and lower by the share of the signal they miss: on the DIMS closed -> open
AdK transition it falls along the transition as the conformations leave the span of the modes
(``benchmarks/bench_hemnma_real.py``).

At low SNR the figure is uncertain: the signal power of one image is the small difference of two noisy
powers.  :func:`attainable_correlation` also returns the standard error of the fit quality (delta method,
white noise), and a particle is flagged only when its fit quality is below :data:`POOR_FIT` *and* that
error is below :data:`MAX_FIT_QUALITY_ERROR` (about 0.07 for AdK at SNR 0.1 and 128 px; about 0.5 at
SNR 0.01, where no particle is flagged rather than a random third of them).
"""
import numpy as np
import torch

__all__ = ["POOR_FIT", "POOR_FIT_WARNING", "MAX_FIT_QUALITY_ERROR", "attainable_correlation", "fit_quality",
           "poor_fit"]

POOR_FIT = 0.9  # fit quality below this: the modes leave more than about 19 % of the signal power unexplained
POOR_FIT_WARNING = 0.2  # the log warns when more than this share of the particles is below POOR_FIT
MAX_FIT_QUALITY_ERROR = 0.1  # a fit quality this uncertain (standard error) flags nothing


def attainable_correlation(images, mask, min_background=64):
    """Correlation a perfect model would reach on each image and the relative standard error of a fit
    quality measured against it, both (N,); NaN where the box has fewer than ``min_background`` pixels
    outside the mask to measure the noise on."""
    flat = images.reshape(images.shape[0], -1)
    m = mask.reshape(1, -1).to(flat.dtype)
    background = (m[0] <= 1e-6)
    n_bg = int(background.sum())
    if n_bg < min_background:
        nan = torch.full((flat.shape[0],), float("nan"), dtype=flat.dtype, device=flat.device)
        return nan, nan.clone()
    noise_var = flat[:, background].var(dim=1)
    mean = (flat * m).sum(1, keepdim=True) / m.sum()
    power = (((flat - mean) * m) ** 2).sum(1)
    n_eff = (m * m).sum()
    noise_power = noise_var * n_eff
    signal_power = (power - noise_power).clamp_min(1e-30)
    snr = signal_power / noise_power.clamp_min(1e-30)  # per pixel inside the mask
    # variance of <y, s> / |s| (the model's correlation) and of the estimated |s| (noise in |y|^2, in the
    # background variance), relative, for white noise
    rel_var = 1.0 / (snr * n_eff) + (2.0 * n_eff + 4.0 * snr * n_eff + 2.0 * n_eff ** 2 / n_bg) / \
        (4.0 * snr ** 2 * n_eff ** 2)
    return torch.sqrt(signal_power / power.clamp_min(1e-30)), torch.sqrt(rel_var)


def fit_quality(correlation, attainable):
    """``correlation / attainable`` (NaN where the attainable correlation is unknown or zero)."""
    ok = attainable > 1e-6
    out = torch.full_like(correlation, float("nan"))
    out[ok] = correlation[ok] / attainable[ok]
    return out


def poor_fit(quality, error):
    """Particles flagged as not explained by the modes, from the fit quality and its (absolute) standard
    error (numpy bool; NaN is never flagged)."""
    quality, error = np.asarray(quality, dtype=np.float64), np.asarray(error, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (quality < POOR_FIT) & (error < MAX_FIT_QUALITY_ERROR)
