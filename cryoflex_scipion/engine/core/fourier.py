"""Fourier-space utilities for batches of images and volumes (torch).

Layout: spectra are *centred*: ``F = fftshift(fftn(ifftshift(x)))`` so that the
zero frequency sits at index ``D // 2`` (the rotation centre of
:mod:`geometry`).  Frequency index ``k`` runs over ``-D//2 ... (D-1)//2``.
Functions work on the last two (images) or three (volumes) axes and keep any
leading batch axes.
"""
import math

import torch

__all__ = [
    "fft_centered", "ifft_centered", "half_spectrum_filter", "apply_half_spectrum_filter", "freq_index", "radial_index", "freq_grid_2d",
    "shift_images", "fourier_resize", "lowpass", "soft_mask", "rotate_images", "rotate_images_exact",
    "sinc2_correction",
]


def _dims(ndim):
    return tuple(range(-ndim, 0))


def fft_centered(x, ndim=2):
    dims = _dims(ndim)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims), dim=dims)


def ifft_centered(f, ndim=2, real=True):
    dims = _dims(ndim)
    x = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(f, dim=dims), dim=dims), dim=dims)
    return x.real if real else x


def half_spectrum_filter(filters):
    """A real filter given in the centred layout (..., D, D), symmetric under k -> -k (a CTF),
    as the half spectrum of an ``rfft2`` of the uncentred image: (..., D, D//2 + 1)."""
    size = filters.shape[-1]
    return torch.fft.ifftshift(filters, dim=(-2, -1))[..., : size // 2 + 1]


def apply_half_spectrum_filter(images, half_filter):
    """Filter real images with :func:`half_spectrum_filter` output: half the FFT work of
    ``ifft_centered(fft_centered(images) * filters)``.  Identical for odd sizes; for even sizes
    the two differ only in how the unpaired Nyquist row and column are filtered."""
    size = images.shape[-1]
    spec = torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))
    out = torch.fft.irfft2(spec * half_filter, s=(size, size))
    return torch.fft.fftshift(out, dim=(-2, -1))


def freq_index(size, device=None, dtype=torch.float32):
    """Centred frequency (or coordinate) indices ``-size//2 ... (size-1)//2``."""
    return torch.arange(size, device=device, dtype=dtype) - size // 2


def freq_grid_2d(size, apix=None, device=None, dtype=torch.float32):
    """``(ky, kx)`` grids of centred frequencies, in 1/A when ``apix`` is given
    (cycles per pixel otherwise)."""
    k = freq_index(size, device, dtype) / size
    if apix is not None:
        k = k / apix
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    return ky, kx


def radial_index(size, ndim, device=None):
    """Distance (in Fourier pixels) of every centred-spectrum element to the origin."""
    k = freq_index(size, device, torch.float32)
    grids = torch.meshgrid(*([k] * ndim), indexing="ij")
    return torch.sqrt(sum(g * g for g in grids))


def shift_images(images, shifts_px):
    """Translate image content by ``shifts_px`` ``(..., 2)`` = (dx, dy) pixels.

    Exact for band-limited images (phase ramp in Fourier space); sub-pixel
    shifts allowed.  ``images`` is ``(..., D, D)``.
    """
    size = images.shape[-1]
    ky, kx = freq_grid_2d(size, device=images.device, dtype=images.dtype if images.is_floating_point() else torch.float32)
    sx = shifts_px[..., 0, None, None].to(kx.dtype)
    sy = shifts_px[..., 1, None, None].to(kx.dtype)
    phase = torch.exp(-2j * math.pi * (kx * sx + ky * sy))
    return ifft_centered(fft_centered(images) * phase)


def fourier_resize(x, new_size, ndim=2):
    """Fourier crop (downsample, anti-aliased) or zero-pad (upsample) to ``new_size``.

    Pixel values are preserved (the mean density stays the same), so the pixel
    size becomes ``apix * old_size / new_size``.
    """
    old = x.shape[-1]
    if new_size == old:
        return x
    f = fft_centered(x, ndim)
    c_old, c_new = old // 2, new_size // 2
    if new_size < old:
        sl = tuple([Ellipsis] + [slice(c_old - c_new, c_old - c_new + new_size)] * ndim)
        g = f[sl]
    else:
        g = torch.zeros(x.shape[:-ndim] + (new_size,) * ndim, dtype=f.dtype, device=f.device)
        sl = tuple([Ellipsis] + [slice(c_new - c_old, c_new - c_old + old)] * ndim)
        g[sl] = f
    return ifft_centered(g, ndim) * (new_size / old) ** ndim


def lowpass(x, resolution_A, apix, ndim=2, edge_width_px=2.0):
    """Low-pass to ``resolution_A`` with a raised-cosine edge ``edge_width_px`` wide."""
    size = x.shape[-1]
    r = radial_index(size, ndim, x.device)
    cutoff = size * apix / resolution_A
    filt = _raised_cosine(r, cutoff, edge_width_px).to(x.dtype if x.is_floating_point() else torch.float32)
    return ifft_centered(fft_centered(x, ndim) * filt, ndim)


def _raised_cosine(r, radius, width):
    """1 inside ``radius - width/2``, 0 outside ``radius + width/2``, cosine between."""
    if width <= 0:
        return (r <= radius).float()
    t = ((r - (radius - width / 2)) / width).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


def soft_mask(size, radius_px, ndim=2, edge_width_px=3.0, device=None):
    """Circular (2D) or spherical (3D) mask centred at ``size // 2`` with a soft edge."""
    return _raised_cosine(radial_index(size, ndim, device), radius_px, edge_width_px)


def rotate_images(images, psi_deg):
    """Rotate image content in-plane by ``psi`` degrees (per image), bilinear (cheap; it low-passes
    noise: :func:`rotate_images_exact` keeps the noise spectrum).

    Follows :mod:`geometry`: a point ``p`` of the input moves to ``Rz(psi) p``,
    so rotating the projection of orientation ``A`` by ``psi`` gives the
    projection of ``Rz(psi) @ A``.
    """
    n, size = images.shape[0], images.shape[-1]
    dtype = images.dtype
    a = torch.deg2rad(torch.as_tensor(psi_deg, dtype=dtype, device=images.device)).expand(n)
    c, s = torch.cos(a), torch.sin(a)
    coords = freq_index(size, images.device, dtype)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # out(p') = in(Rz(psi)^T p'),  Rz(psi)^T = [[c, -s], [s, c]]
    src_x = c[:, None, None] * xx - s[:, None, None] * yy
    src_y = s[:, None, None] * xx + c[:, None, None] * yy
    grid = torch.stack([(src_x + size // 2) * 2 / (size - 1) - 1,
                        (src_y + size // 2) * 2 / (size - 1) - 1], -1)
    out = torch.nn.functional.grid_sample(images[:, None], grid, mode="bilinear",
                                          padding_mode="zeros", align_corners=True)
    return out[:, 0]


def sinc2_correction(size, padded_size, ndim, device=None, dtype=torch.float32):
    """Real-space factor of linear (trilinear) interpolation in a Fourier grid of
    ``padded_size``: ``prod sinc^2(x / padded_size)`` over the centred box of ``size``.

    Divide a volume by it before slicing its spectrum (projection), or divide a
    reconstruction by it after back-projecting with linear weights (gridding
    correction).
    """
    x = freq_index(size, device, dtype) / padded_size
    s = torch.special.sinc(x) ** 2
    out = s
    for _ in range(ndim - 1):
        out = out[..., None] * s
    return out


# Exact in-plane rotation: exact quarter turns (an index permutation about the centre pixel D // 2),
# then the remaining angle (|beta| <= 45 degrees) as three shears (Unser, Thevenaz & Yaroslavsky
# 1995), each a per-row (or per-column) Fourier phase ramp.  A phase ramp is unitary, so the noise
# spectrum of a rotated image is the unrotated one's (bilinear interpolation keeps only ~40% of
# white noise's variance at 45 degrees).  Exact for content within about 0.9 of the half box;
# only the corners' background wraps around.


def _quarter_turn(images):
    """Turn content by +90 degrees about pixel ``D // 2``: ``out[j, i] = in[i, (2c - j) mod D]``.

    (``R = inplane_matrix(90)`` sends ``(x, y)`` to ``(y, -x)``, so ``out(x, y) = in(-y, x)``.)
    For even ``D`` the row ``2c - j = D`` wraps to row 0: the unpaired Nyquist edge of the box.
    """
    size = images.shape[-1]
    c = size // 2
    perm = (2 * c - torch.arange(size, device=images.device)) % size
    return images.transpose(-1, -2)[..., perm, :]


def _shear(images, amount, axis):
    """Shear content by per-image ``amount`` (N,): ``axis='x'`` moves row ``y`` by ``amount * y``
    along x; ``axis='y'`` moves column ``x`` by ``amount * x`` along y (coordinates about ``D // 2``)."""
    size = images.shape[-1]
    c = size // 2
    dim = -1 if axis == "x" else -2
    coord = (torch.arange(size, device=images.device, dtype=images.dtype) - c)
    k = torch.fft.rfftfreq(size, device=images.device, dtype=images.dtype)  # cycles per pixel, 0..1/2
    shift = amount[:, None] * coord[None, :]                                # (N, D): per row or column
    phase = torch.exp(-2j * math.pi * shift[..., None] * k)                 # (N, D, D//2 + 1)
    if axis == "y":
        phase = phase.transpose(-1, -2)                                     # (N, D//2 + 1, D)
    spec = torch.fft.rfft(images, dim=dim)
    return torch.fft.irfft(spec * phase, n=size, dim=dim)


def rotate_images_exact(images, alpha_deg):
    """Turn ``images`` (N, D, D) by ``alpha_deg`` (N,) degrees, content point ``p -> R(alpha) p``.

    Quarter turns, then three Fourier shears ``X(t) Y(-s) X(t)`` with ``t = tan(beta/2)``,
    ``s = sin(beta)``: ``[[1, t], [0, 1]] [[1, 0], [-s, 1]] [[1, t], [0, 1]] = [[c, s], [-s, c]]``,
    the ``inplane_matrix`` of ``beta``.
    """
    alpha = torch.as_tensor(alpha_deg, device=images.device, dtype=images.dtype).reshape(-1)
    alpha = alpha.expand(images.shape[0]) if alpha.numel() == 1 else alpha
    quarters = torch.round(alpha / 90.0)
    beta = torch.deg2rad(alpha - 90.0 * quarters)
    quarters = (quarters.long() % 4)[:, None, None]
    out, turned = images, images
    for k in range(1, 4):  # every image turned 1, 2, 3 times, the right one kept: no host synchronisation
        turned = _quarter_turn(turned)
        out = torch.where(quarters == k, turned, out)
    t, s = torch.tan(beta / 2), torch.sin(beta)
    out = _shear(out, t, "x")
    out = _shear(out, -s, "y")
    return _shear(out, t, "x")
