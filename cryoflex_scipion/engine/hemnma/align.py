"""HEMNMA elastic 3D-to-2D alignment of particle images, batched on GPU or CPU.

For each image, find the normal-mode amplitudes ``q``, the orientation ``A`` and the shift ``s``
that maximise the correlation between the image and the CTF-modulated projection of
``reference + sum_k q_k mode_k``:

1. **Global search** (:mod:`.search`): the image, matched-filtered by its CTF and Fourier-cropped
   to a small search size, is compared in one matrix product with projections of the undeformed
   reference over a sphere grid (``angular_step``), for every in-plane angle and every shift of a
   grid within ``max_shift``.  The ``starts`` best distinct directions are kept.
2. **Coarse refinement** (:mod:`.refine`) of every start at a lower working size: joint
   Levenberg-Marquardt on rotation, shift and amplitudes through the analytic Gaussian projector
   (amplitudes start at 0).  The start with the best correlation wins.
3. **Fine refinement** of the winner at the full working size (at most 128 px by default,
   anti-aliased by Fourier cropping, as the HEMNMA paper recommends).

The cost reported per particle is ``1 - correlation`` at the final level; the fit quality
(:mod:`.quality`) is that correlation against the one a perfect model would reach on the image.
"""
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..core.ctf import compute_ctf
from ..core.fourier import fourier_resize, soft_mask
from ..core.geometry import euler_to_matrix, matrix_to_euler
from .model import CTF_FLIPPED, CTF_FULL, CTF_NONE
from .quality import attainable_correlation, fit_quality
from .refine import refine_poses
from .search import TemplateBank, search_orientations

__all__ = ["AlignmentSettings", "ElasticAligner", "MAX_SEARCH_DEFORMATIONS"]

MAX_SEARCH_DEFORMATIONS = 81  # templates per direction in the global search: the bank's memory and GEMM time


@dataclass
class AlignmentSettings:
    working_size: int = 128          # px (images are Fourier-cropped to at most this)
    search_size: int = 48            # px for the global search (at most the working size)
    coarse_size: int = 48            # px for the coarse refinement (0: skip)
    angular_step: float = 10.0       # degrees, sphere grid and in-plane step of the global search
    max_shift: float = 5.0           # A, shift range of the global search
    starts: int = 3                  # distinct orientations refined from the global search
    coarse_iterations: int = 10     # at the coarse size: the first `screen_iterations` on every start,
    screen_iterations: int = 3      # the rest on the best start only
    fine_iterations: int = 8
    amplitude_bound: float = None    # |q| limit; None: 5 A RMS displacement per mode (5 sqrt(atoms))
    search_levels: int = 3           # amplitude values per mode in the global search (1: undeformed only)
    ctf_mode: str = CTF_FULL
    mask_margin: float = 1.2         # mask radius = margin x reference radius
    mask_radius: float = None        # A, overrides mask_margin (one mask for several references: comparable costs)
    local_only: bool = False         # skip the global search: refine from the given poses
    coarse_groups: object = None     # atom -> bead index (e.g. residues): a coarse-grained model for the
                                     # global search and the coarse refinement; None: full model


class ElasticAligner:
    """Aligns batches of particles of one box and pixel size against an :class:`ElasticReference`."""

    def __init__(self, reference, box, apix, settings):
        self.reference, self.settings = reference, settings
        self.box, self.apix = int(box), float(apix)
        self.device, self.dtype = reference.device, reference.dtype
        self.size = min(settings.working_size, self.box)
        self.apix_work = self.apix * self.box / self.size
        self.search_size = min(settings.search_size or 48, self.size)
        self.apix_search = self.apix * self.box / self.search_size
        self.coarse_size = min(settings.coarse_size, self.size) if settings.coarse_size else 0
        radius_a = settings.mask_radius or settings.mask_margin * reference.radius() + 2 * reference.sigma
        if radius_a > 0.5 * self.box * self.apix:
            radius_a = 0.5 * self.box * self.apix
        self.radius_a = radius_a
        self.coarse_reference = reference if settings.coarse_groups is None else \
            reference.coarse_grained(settings.coarse_groups)
        n_atoms = reference.coords.shape[0]
        self.amplitude_bound = settings.amplitude_bound or 5.0 * math.sqrt(n_atoms)
        self.timings = {"search": 0.0, "coarse": 0.0, "fine": 0.0}
        self.bank = None if settings.local_only else TemplateBank(
            self.coarse_reference, settings.angular_step, self.search_size, self.apix_search, radius_a / self.apix_search,
            amplitudes=self._amplitude_grid())

    def _amplitude_grid(self):
        """Deformations tried in the global search, always with the undeformed reference among them.

        ``search_levels`` values per mode in +/- 0.6 x the amplitude bound: every combination of the first
        (lowest-frequency, largest-motion) modes, as many as :data:`MAX_SEARCH_DEFORMATIONS` allows, and each
        further mode alone at its levels (3 levels: 27 for 3 modes, 81 for 4; 33 for 6 modes, 41 for 10).
        The earlier rule (fewer levels until the whole grid fitted) left 2 levels, +/- 0.6 x the bound, for
        5 or 6 modes: no template near zero, and particles of the reference conformation aligned 15-18 deg
        off (64-px AdK test: 0.5 deg with this grid)."""
        m, levels = self.reference.n_modes, max(1, self.settings.search_levels)
        if m == 0 or levels == 1:
            return np.zeros((1, m))
        if levels % 2 == 0:
            levels += 1  # an odd number of levels has zero among them
        values = np.linspace(-0.6, 0.6, levels) * self.amplitude_bound
        full = m
        while full > 1 and levels ** full + (levels - 1) * (m - full) > MAX_SEARCH_DEFORMATIONS:
            full -= 1
        grid = np.zeros((levels ** full, m))
        grid[:, :full] = np.stack(np.meshgrid(*([values] * full), indexing="ij"), -1).reshape(-1, full)
        singles = []
        for k in range(full, m):
            for v in values[values != 0]:
                point = np.zeros(m)
                point[k] = v
                singles.append(point)
        return np.concatenate([grid] + ([np.stack(singles)] if singles else []))

    def _tick(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _tock(self, stage, tick):
        self.timings[stage] += self._tick() - tick

    def _mask(self, size, apix):
        return soft_mask(size, self.radius_a / apix, 2, 2.0, self.device).to(self.dtype)

    def _filters(self, ctf, size, apix, n):
        if ctf is None or self.settings.ctf_mode == CTF_NONE:
            return None
        c = compute_ctf(ctf, size, apix, n=n, device=self.device, dtype=self.dtype)
        return c.abs() if self.settings.ctf_mode == CTF_FLIPPED else c

    def align(self, images, ctf=None, init_euler=None, init_origin_a=None):
        """Align a batch; images (N, box, box) numpy or tensor.  Returns numpy arrays:
        euler (N, 3), origin_A (N, 2) RELION origins, amplitudes (N, M), cost (N,), fit_quality (N,) and its
        standard error fit_quality_error (N,)."""
        s = self.settings
        imgs = torch.as_tensor(np.asarray(images), device=self.device, dtype=self.dtype)
        n = imgs.shape[0]
        work = fourier_resize(imgs, self.size) if self.size != self.box else imgs
        zeros_amp = torch.zeros(n, self.reference.n_modes, device=self.device, dtype=self.dtype)

        if s.local_only:
            if init_euler is None:
                raise ValueError("local refinement needs initial poses")
            rot = torch.as_tensor(euler_to_matrix(np.asarray(init_euler)), device=self.device, dtype=self.dtype)
            shift = -torch.as_tensor(np.asarray(init_origin_a) / self.apix_work, device=self.device, dtype=self.dtype)
            rot, shift = rot[:, None], shift[:, None]
        else:
            small = fourier_resize(imgs, self.search_size) if self.search_size != self.box else imgs
            filt = self._filters(ctf, self.search_size, self.apix_search, n)
            if filt is None:
                filt = torch.ones_like(small)
            tick = self._tick()
            found = search_orientations(small, filt, self.bank, s.angular_step, s.max_shift / self.apix_search,
                                        s.starts)
            self._tock("search", tick)
            k = found["euler"].shape[1]
            rot = torch.as_tensor(euler_to_matrix(found["euler"].reshape(-1, 3).double().cpu().numpy()),
                                  device=self.device, dtype=self.dtype).reshape(n, k, 3, 3)
            shift = found["shift_px"] * (self.apix_search / self.apix_work)
            amp = found["amplitudes"]
            if init_euler is not None:  # an existing alignment competes as one more start
                r0 = torch.as_tensor(euler_to_matrix(np.asarray(init_euler)), device=self.device, dtype=self.dtype)
                s0 = -torch.as_tensor(np.asarray(init_origin_a) / self.apix_work, device=self.device, dtype=self.dtype)
                rot = torch.cat([rot, r0[:, None]], 1)
                shift = torch.cat([shift, s0[:, None]], 1)
                amp = torch.cat([amp, zeros_amp[:, None]], 1)
        k = rot.shape[1]
        if s.local_only:
            amp = zeros_amp[:, None]

        tick = self._tick()
        if self.coarse_size and self.coarse_size < self.size:
            apix_c = self.apix * self.box / self.coarse_size
            coarse = fourier_resize(work, self.coarse_size)
            filt = self._filters(ctf, self.coarse_size, apix_c, n)
            mask = self._mask(self.coarse_size, apix_c)
            shift_c = shift * (self.apix_work / apix_c)
            if k > 1:  # screen every start briefly, keep the best one
                rep = lambda t: t[:, None].expand(n, k, *t.shape[1:]).reshape(n * k, *t.shape[1:])  # noqa: E731
                out = refine_poses(self.coarse_reference, rep(coarse), None if filt is None else rep(filt), mask,
                                   rot.reshape(n * k, 3, 3), shift_c.reshape(n * k, 2), amp.reshape(n * k, -1),
                                   apix_c, min(s.screen_iterations, s.coarse_iterations), self.amplitude_bound)
                best = out["correlation"].reshape(n, k).argmax(1)
                pick = torch.arange(n, device=self.device) * k + best
                rot, shift_c, amp = out["rotations"][pick], out["shift_px"][pick], out["amplitudes"][pick]
                remaining = s.coarse_iterations - min(s.screen_iterations, s.coarse_iterations)
            else:
                rot, shift_c, amp = rot[:, 0], shift_c[:, 0], amp[:, 0]
                remaining = s.coarse_iterations
            if remaining > 0:
                out = refine_poses(self.coarse_reference, coarse, filt, mask, rot, shift_c, amp, apix_c, remaining,
                                   self.amplitude_bound)
                rot, shift_c, amp = out["rotations"], out["shift_px"], out["amplitudes"]
            shift = shift_c * (apix_c / self.apix_work)
        else:
            rot, shift, amp = rot[:, 0], shift[:, 0], amp[:, 0]
        self._tock("coarse", tick)

        tick = self._tick()
        filt = self._filters(ctf, self.size, self.apix_work, n)
        mask = self._mask(self.size, self.apix_work)
        out = refine_poses(self.reference, work, filt, mask, rot, shift, amp,
                           self.apix_work, s.fine_iterations, self.amplitude_bound)
        attainable, quality_error = attainable_correlation(work, mask)
        quality = fit_quality(out["correlation"], attainable)
        self._tock("fine", tick)
        euler = matrix_to_euler(out["rotations"].double().cpu().numpy())
        origin = -out["shift_px"].double().cpu().numpy() * self.apix_work
        return {"euler": euler, "origin_A": origin, "amplitudes": out["amplitudes"].double().cpu().numpy(),
                "cost": (1.0 - out["correlation"]).double().cpu().numpy(),
                "fit_quality": quality.double().cpu().numpy(),
                "fit_quality_error": (quality_error * quality).double().cpu().numpy()}
