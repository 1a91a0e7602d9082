"""Simulated particles with known ground truth.

A particle is the projection of an atomic model (Gaussian atoms, see
:mod:`projection`) in a uniformly random orientation, moved by a random
shift, multiplied by a CTF with a random defocus, plus Gaussian noise.

Noise and SNR
-------------
``SNR = var(clean image) / var(noise)``, both over the whole box, with the
clean image being the CTF-modulated projection.  The noise variance
``sigma^2 = var(clean) / SNR`` is split as in Sorzano et al. (2007,
"structural" noise before the CTF and "shot" noise after it): a fraction
``f`` (``noise_before_ctf``) of ``sigma^2`` comes from white noise added to
the projection *before* the CTF, scaled so that after the CTF it has
variance ``f sigma^2`` (its variance before the CTF is
``f sigma^2 / mean(CTF^2)``), and ``1 - f`` from white noise added after the
CTF.  The total noise variance is therefore ``sigma^2`` whatever ``f``.

Conformations are either the reference model, the reference deformed along
normal modes with random amplitudes, or frames of a trajectory (a list of
structures with the same atoms); every conformation is centred with the same
offset (the reference's centre of mass), so their relative motion is kept.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch

from .atoms import deform
from .ctf import CTFParams, compute_ctf
from .fourier import fft_centered, ifft_centered
from .geometry import euler_to_matrix, matrix_to_euler, origin_to_shift, random_rotations
from .io.mrc import StackWriter, write_map
from .io.particles import ParticleTable
from .outputs import Simulate
from .projection import gaussian_volume, project_gaussians
from .runtime import Progress, run_batches

__all__ = ["SimulationSettings", "Conformations", "sample_parameters", "render_batch", "add_noise",
           "simulate_particles", "write_ground_truth"]


@dataclass
class SimulationSettings:
    n_particles: int
    size: int
    apix: float
    snr: float = None                 # None: noiseless
    noise_before_ctf: float = 0.5     # fraction of the noise variance added before the CTF
    ctf: bool = True
    defocus_min: float = 10000.0      # A
    defocus_max: float = 25000.0
    astigmatism: float = 0.0          # max |defocusU - defocusV| in A
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    max_shift: float = 0.0            # A, uniform in [-max, max] on each axis
    sigma: float = None               # A, Gaussian width of an atom (default: one pixel)
    seed: int = 0

    def atom_sigma(self):
        return float(self.sigma) if self.sigma else float(self.apix)


class Conformations:
    """Source of per-particle atom coordinates (already centred in the box frame)."""

    def __init__(self, reference, weights, modes=None, amplitude_std=None, amplitude_range=None, frames=None,
                 center=None):
        self.reference = np.asarray(reference, dtype=np.float64)
        self.center = self.reference.mean(0) if center is None else np.asarray(center, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.modes = None if modes is None else np.asarray(modes, dtype=np.float64)
        self.frames = None if frames is None else np.asarray(frames, dtype=np.float64)
        if self.modes is not None:
            if self.modes.shape[1:] != self.reference.shape:
                raise ValueError("modes have %d atoms but the model has %d"
                                 % (self.modes.shape[1], len(self.reference)))
            m = len(self.modes)
            self.amplitude_std = None if amplitude_std is None else np.broadcast_to(np.asarray(amplitude_std, float), (m,))
            self.amplitude_range = None if amplitude_range is None else np.broadcast_to(np.asarray(amplitude_range, float), (m,))
            if self.amplitude_std is None and self.amplitude_range is None:
                raise ValueError("give amplitude_std or amplitude_range with normal modes")
        if self.frames is not None and self.frames.shape[1:] != self.reference.shape:
            raise ValueError("trajectory frames have %d atoms but the model has %d"
                             % (self.frames.shape[1], len(self.reference)))

    @property
    def kind(self):
        return "modes" if self.modes is not None else ("frames" if self.frames is not None else "rigid")

    def sample(self, n, rng):
        """Ground-truth conformation labels: amplitudes ``(n, M)``, frame indices ``(n,)`` or None."""
        if self.modes is not None:
            if self.amplitude_range is not None:
                return rng.uniform(-1, 1, (n, len(self.modes))) * self.amplitude_range
            return rng.standard_normal((n, len(self.modes))) * self.amplitude_std
        if self.frames is not None:
            return rng.integers(0, len(self.frames), n)
        return None

    def coords(self, labels, device, dtype):
        """Centred coordinates for a batch: ``(A, 3)`` shared or ``(n, A, 3)``."""
        if self.modes is not None:
            ref = torch.as_tensor(self.reference - self.center, device=device, dtype=dtype)
            return deform(ref, torch.as_tensor(self.modes, device=device, dtype=dtype),
                          torch.as_tensor(labels, device=device, dtype=dtype))
        if self.frames is not None:
            return torch.as_tensor(self.frames[labels] - self.center, device=device, dtype=dtype)
        return torch.as_tensor(self.reference - self.center, device=device, dtype=dtype)


def sample_parameters(settings, conformations):
    """Random ground truth for all particles (numpy; cheap, done once up front)."""
    rng = np.random.default_rng(settings.seed)
    n = settings.n_particles
    gen = torch.Generator().manual_seed(int(settings.seed))
    euler = matrix_to_euler(random_rotations(n, gen)).numpy()
    origin = rng.uniform(-1, 1, (n, 2)) * settings.max_shift
    defocus_u = rng.uniform(settings.defocus_min, settings.defocus_max, n)
    astig = rng.uniform(0, 1, n) * settings.astigmatism
    ctf = CTFParams(defocus_u=defocus_u, defocus_v=defocus_u - astig, defocus_angle=rng.uniform(0, 180, n),
                    voltage=settings.voltage, cs=settings.cs, amplitude_contrast=settings.amplitude_contrast)
    return {"euler": euler, "origin_A": origin, "ctf": ctf, "labels": conformations.sample(n, rng)}


def render_batch(conformations, settings, params, index, device, dtype=torch.float32):
    """Clean projections (before the CTF) and CTF images of the particles ``index``.

    Returns ``(projections, ctf)``; ``ctf`` is None without CTF.
    """
    rot = torch.as_tensor(euler_to_matrix(params["euler"][index]), device=device, dtype=dtype)
    shifts = torch.as_tensor(origin_to_shift(params["origin_A"][index]) / settings.apix, device=device, dtype=dtype)
    labels = None if params["labels"] is None else params["labels"][index]
    coords = conformations.coords(labels, device, dtype)
    proj = project_gaussians(coords, torch.as_tensor(conformations.weights, device=device, dtype=dtype),
                             settings.atom_sigma(), rot, settings.size, settings.apix, shifts_px=shifts)
    ctf = None
    if settings.ctf:
        ctf = compute_ctf(params["ctf"].subset(index), settings.size, settings.apix, n=len(index),
                          device=device, dtype=dtype)
    return proj, ctf


def add_noise(projections, ctf, snr, noise_before_ctf, generator):
    """CTF-modulated images with noise at ``snr`` (see module docstring).

    Returns ``(images, clean, measured_snr)``; ``measured_snr`` is the per-image
    ratio of the clean and noise variances actually drawn.
    """
    spec = fft_centered(projections)
    clean = ifft_centered(spec * ctf) if ctf is not None else projections
    if snr is None:
        return clean, clean, None
    var_signal = clean.var(dim=(-2, -1), unbiased=False)
    sigma2 = var_signal / snr
    shape, device, dtype = projections.shape, projections.device, projections.dtype
    noise = torch.zeros_like(clean)
    if noise_before_ctf > 0 and ctf is not None:
        mean_ctf2 = (ctf * ctf).mean(dim=(-2, -1))
        before = torch.randn(shape, generator=generator, device=device, dtype=dtype) * \
            torch.sqrt(noise_before_ctf * sigma2 / mean_ctf2)[:, None, None]
        noise = noise + ifft_centered(fft_centered(before) * ctf)
        after_fraction = 1.0 - noise_before_ctf
    else:
        after_fraction = 1.0
    if after_fraction > 0:
        noise = noise + torch.randn(shape, generator=generator, device=device, dtype=dtype) * \
            torch.sqrt(after_fraction * sigma2)[:, None, None]
    measured = var_signal / noise.var(dim=(-2, -1), unbiased=False)
    return clean + noise, clean, measured


def simulate_particles(out, conformations, settings, device, batch_size=128, progress=None):
    """Simulate ``settings.n_particles`` particles into the folder ``out`` (names in
    :class:`.outputs.Simulate`): the stack (written batch by batch, never all in memory), the
    RELION 3.1 STAR with poses and CTF, the ground truth (:func:`write_ground_truth`) and the
    noiseless map of the reference conformation in the same box, placed over the input model.

    Returns ``(params, facts)``: the sampled ground truth (:func:`sample_parameters`) and a dict
    for the summary (measured SNR, batch size used, map origin, times).
    """
    os.makedirs(out, exist_ok=True)
    params = sample_parameters(settings, conformations)
    n, size, apix = settings.n_particles, settings.size, settings.apix
    measured = np.full(n, np.nan)
    progress = progress or Progress(n, "simulate")
    gen = torch.Generator(device=device)
    with StackWriter(os.path.join(out, Simulate.STACK), n, size, apix) as writer:
        def work(start, stop):
            index = np.arange(start, stop)
            gen.manual_seed(settings.seed * 1000003 + start)  # reproducible for a given batch size
            proj, ctf = render_batch(conformations, settings, params, index, device)
            images, _, snr = add_noise(proj, ctf, settings.snr, settings.noise_before_ctf, gen)
            writer.write(images.cpu().numpy())
            if snr is not None:
                measured[index] = snr.cpu().numpy()
            progress.update(len(index))
        used_batch = run_batches(n, batch_size, work, device, "simulate")

    table = ParticleTable(np.full(n, Simulate.STACK), np.arange(n), np.full(n, apix), np.full(n, size),
                          params["euler"], params["origin_A"], params["ctf"] if settings.ctf else None,
                          np.ones(n, dtype=np.int64), base_dir=out)
    table.to_star(os.path.join(out, Simulate.STAR))
    write_ground_truth(os.path.join(out, Simulate.GROUND_TRUTH), params, conformations)
    ref = gaussian_volume(torch.as_tensor(conformations.reference - conformations.center, device=device),
                          conformations.weights, settings.atom_sigma(), size, apix)
    map_origin = tuple(conformations.center - (size // 2) * apix)
    write_map(os.path.join(out, Simulate.REFERENCE_MAP), ref.cpu().numpy(), apix, map_origin)
    facts = {"snr_measured_mean": None if settings.snr is None else float(np.mean(measured)),
             "batch_size": used_batch, "reference_map_origin_A": list(map_origin),
             "seconds": progress.elapsed(), "particles_per_second": progress.rate()}
    return params, facts


def write_ground_truth(path, params, conformations, extra=None):
    """Per-particle ground truth as CSV: index (1-based), angles, RELION origin (A), defocus, and the
    normal-mode amplitudes (``amplitude_<k>``) or the trajectory frame (``frame``, 0-based), plus
    the ``extra`` columns given (name -> per-particle values)."""
    n = len(params["euler"])
    cols = {"index": np.arange(1, n + 1), "rot": params["euler"][:, 0], "tilt": params["euler"][:, 1],
            "psi": params["euler"][:, 2], "originX_A": params["origin_A"][:, 0],
            "originY_A": params["origin_A"][:, 1],
            "defocusU": np.broadcast_to(params["ctf"].defocus_u, (n,)),
            "defocusV": np.broadcast_to(params["ctf"].defocus_v, (n,)),
            "defocusAngle": np.broadcast_to(params["ctf"].defocus_angle, (n,))}
    labels = params["labels"]
    if conformations.kind == "modes":
        for k in range(labels.shape[1]):
            cols["amplitude_%d" % (k + 1)] = labels[:, k]
    elif conformations.kind == "frames":
        cols["frame"] = labels
    cols.update(extra or {})
    header = ",".join(cols)
    data = np.stack([np.asarray(v, dtype=np.float64) for v in cols.values()], -1)
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt="%.17g")
