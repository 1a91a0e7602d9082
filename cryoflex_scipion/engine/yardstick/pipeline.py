"""Build an AdK-1D-style yardstick: particles from every frame of a trajectory, with ground truth.

:func:`build` checks everything first (raising :class:`EngineInputError` with a one-line message),
then streams the particles to disk through :func:`..core.simulation.simulate_particles`, writes the
per-particle ground truth with the frame and its LID-NMP distance, the per-frame table and,
unless told not to, one ground-truth map per frame.  :func:`load_dataset` reopens a built folder
and computes the map of any frame, or of any coordinates, on the fly (:class:`Dataset`).

Image formation (as ``simulate``): Gaussian atoms (width ``sigma``, default one pixel; weights =
electrons), uniformly random orientations, shifts uniform in +/- ``max_shift`` A, a CTF with a
random defocus in [``defocus_min``, ``defocus_max``], white Gaussian noise.  Every frame is centred
with ONE offset, the electron-weighted centre of the reference (frame 0 of the AdK trajectory), so
the relative motion is kept; the ground-truth maps use the same atoms, widths, weights, box and
offset, and sit on the same grid as ``reference.mrc`` (origin ``centre - (D // 2) * apix``).

SNR
---
The noise is white and added after the CTF (``noise_before_ctf = 0``, as CryoBench).  SNR is
``var(clean CTF-modulated image) / var(noise)`` over the whole box of each image, the definition of
CryoBench's ``cryosim/add_noise.py`` (``sigma = std(signal) / sqrt(SNR)`` with its default
``--mask none``, i.e. over the whole box; they pool the std over the first 10,000 images, we take it
per image: the same in expectation, since every image has the same mean).  CryoBench adds that noise
at 256 px and then Fourier-crops the stack to 128 px, which keeps the signal's variance (measured
for AdK at 0.5 -> 1 A/px: ratio 1.000) and divides the white noise's by 4.  So with
``snr_convention="cryobench"`` (the default) the requested SNR is CryoBench's nominal SNR and the
images get the noise CryoBench's 128-px images have: box SNR = 4 x SNR.  With ``"box"`` the
requested SNR is the box SNR itself (CryoFlex's ``simulate`` definition).  The summary gives both.
"""
import os
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from ..core.atoms import AtomModel
from ..core.io.mrc import write_map
from ..core.projection import gaussian_volume
from ..core.numbers import parse_number_list
from ..core.runtime import EngineInputError, Progress, log
from ..core.simulation import Conformations, SimulationSettings, simulate_particles, write_ground_truth
from . import outputs
from .trajectory import lid_nmp_distance

__all__ = ["BuildSettings", "FrameConformations", "parse_frames", "check_build", "build", "Dataset", "load_dataset",
           "SNR_CONVENTIONS", "CRYOBENCH_CROP_FACTOR"]

SNR_CONVENTIONS = ("cryobench", "box")
CRYOBENCH_CROP_FACTOR = 4.0   # 256 -> 128 px Fourier crop: white-noise variance / 4, signal kept


@dataclass
class BuildSettings:
    particles_per_frame: int = 1000
    frames: list = None               # trajectory frame indices (0-based); None: all
    size: int = 128                   # px
    apix: float = 1.0                 # A/px: the open state (35.8 A + 3 sigma + shifts) inside 64 A
    snr: float = 0.01
    snr_convention: str = "cryobench"
    noise_before_ctf: float = 0.0
    ctf: bool = True
    defocus_min: float = 10000.0
    defocus_max: float = 25000.0
    astigmatism: float = 0.0
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    max_shift: float = 5.0            # A, uniform in +/- on x and y
    sigma: float = None               # A, atom width (default: one pixel)
    write_maps: bool = True
    seed: int = 0

    def atom_sigma(self):
        return float(self.sigma) if self.sigma else float(self.apix)

    def box_snr(self):
        """SNR over the box of the images written (see the module docstring)."""
        return self.snr * (CRYOBENCH_CROP_FACTOR if self.snr_convention == "cryobench" else 1.0)


class FrameConformations(Conformations):
    """Trajectory frames with exactly ``per_frame`` particles of each frame in ``frame_ids``, in random
    order; labels are trajectory frame indices."""

    def __init__(self, reference, weights, frames, frame_ids, per_frame, center):
        super().__init__(reference, weights, frames=frames, center=center)
        self.frame_ids = np.asarray(frame_ids, dtype=np.int64)
        self.per_frame = int(per_frame)

    def sample(self, n, rng):
        labels = np.repeat(self.frame_ids, self.per_frame)
        if n != len(labels):
            raise ValueError("%d particles asked for %d frames x %d" % (n, len(self.frame_ids), self.per_frame))
        return rng.permutation(labels)


def parse_frames(spec, n_frames):
    """Frame list from ``"all"``, ``"0-97"``, ``"0,10,20-30"`` or a sequence of ints (0-based)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(n_frames))
    if isinstance(spec, str):
        try:
            frames = parse_number_list(spec, "--frames") or []
        except ValueError as exc:
            raise EngineInputError(str(exc)) from None
    else:
        frames = [int(f) for f in spec]
    if not frames:
        raise EngineInputError("the frame list is empty (%r)" % (spec,))
    bad = [f for f in frames if f < 0 or f >= n_frames]
    if bad:
        raise EngineInputError("frame %d does not exist: the trajectory has frames 0-%d" % (bad[0], n_frames - 1))
    if len(set(frames)) != len(frames):
        raise EngineInputError("the frame list repeats frames (%r); give each frame once" % (spec,))
    return frames


def _center(model):
    return model.center()


def check_build(traj, settings):
    """Every check that does not need heavy work; returns facts for the summary (radius, half-width)."""
    s = settings
    problems = []
    if not isinstance(s.size, (int, np.integer)) or s.size < 32 or s.size > 1024 or s.size % 2:
        problems.append("the box must be an even number of pixels between 32 and 1024 (got %r)" % (s.size,))
    if not np.isfinite(s.apix) or s.apix <= 0:
        problems.append("the pixel size must be positive (got %r A)" % (s.apix,))
    if not np.isfinite(s.snr) or s.snr <= 0:
        problems.append("the SNR must be positive (got %r)" % (s.snr,))
    if s.snr_convention not in SNR_CONVENTIONS:
        problems.append("the SNR convention is one of %s (got %r)" % (", ".join(SNR_CONVENTIONS), s.snr_convention))
    if s.particles_per_frame < 1:
        problems.append("particles per frame must be at least 1 (got %d)" % s.particles_per_frame)
    if not 0 <= s.noise_before_ctf <= 1:
        problems.append("the noise fraction before the CTF must be between 0 and 1")
    if s.defocus_min < 0 or s.defocus_min > s.defocus_max:
        problems.append("need 0 <= defocus min <= defocus max")
    if s.sigma is not None and s.sigma <= 0:
        problems.append("the atom width must be positive")
    if s.max_shift < 0:
        problems.append("the maximum shift must be >= 0")
    if problems:
        raise EngineInputError("; ".join(problems))
    frames = parse_frames(s.frames, len(traj))
    center = _center(traj.reference)
    radius = float(np.sqrt(((traj.coords[frames] - center) ** 2).sum(-1)).max())
    reach = radius + 3 * s.atom_sigma() + np.sqrt(2.0) * s.max_shift
    half = s.size * s.apix / 2.0
    if reach > half:
        raise EngineInputError("the model reaches %.1f A from the box centre (atoms up to %.1f A, + 3 atom widths + "
                               "shifts) but the box half-width is %.1f A (%d px of %.3f A): increase the box or the "
                               "pixel size" % (reach, radius, half, s.size, s.apix))
    return {"frames": frames, "center_A": center, "radius_A": radius, "reach_A": float(reach), "half_width_A": half}


def build(out, traj, settings, device, batch_size=128, progress=None):
    """Build the yardstick into ``out`` (names in :mod:`.outputs`); returns the summary dict."""
    t0 = time.time()
    facts = check_build(traj, settings)
    frames, center = facts["frames"], facts["center_A"]
    s = settings
    os.makedirs(out, exist_ok=True)
    ref = traj.reference
    ref.save(os.path.join(out, outputs.REFERENCE_ATOMS))
    n = len(frames) * s.particles_per_frame
    conf = FrameConformations(ref.coords, ref.weights, traj.coords, frames, s.particles_per_frame, center)
    # the imaging settings are SimulationSettings' own fields, under the same names
    imaging = {f.name: getattr(s, f.name) for f in fields(SimulationSettings) if f.name not in ("n_particles", "snr")}
    sim = SimulationSettings(n_particles=n, snr=s.box_snr(), **imaging)
    np.savez(os.path.join(out, outputs.DATASET), frame_ids=np.asarray(frames), coords=traj.coords[frames],
             lid_nmp_A=traj.lid_nmp[frames], reference=ref.coords, weights=ref.weights, center=center,
             sigma=s.atom_sigma(), size=s.size, apix=s.apix, names=ref.names, resids=ref.resids)
    log("AdK-1D: %d frames x %d particles = %d particles of %d px at %.3f A/px, %d atoms, box SNR %.4g (%s SNR %g)"
        % (len(frames), s.particles_per_frame, n, s.size, s.apix, len(ref), s.box_snr(), s.snr_convention, s.snr))
    params, sim_facts = simulate_particles(out, conf, sim, device, batch_size, progress or Progress(n, "simulate"))
    labels = params["labels"]
    distance_of = dict(zip(range(len(traj)), traj.lid_nmp))
    write_ground_truth(os.path.join(out, outputs.GROUND_TRUTH), params, conf,
                       extra={"lid_nmp_A": np.array([distance_of[f] for f in labels])})
    counts = np.bincount(labels, minlength=len(traj))
    rmsd = np.sqrt(((traj.coords[frames] - ref.coords) ** 2).sum(-1).mean(-1))
    radii = np.sqrt(((traj.coords[frames] - center) ** 2).sum(-1)).max(-1)
    np.savetxt(os.path.join(out, outputs.FRAMES),
               np.stack([frames, traj.lid_nmp[frames], counts[frames], rmsd, radii], -1), delimiter=",",
               header="frame,lid_nmp_A,n_particles,rmsd_to_reference_A,radius_A", comments="",
               fmt=["%d", "%.6f", "%d", "%.6f", "%.6f"])
    t_maps = time.time()
    origin = tuple(center - (s.size // 2) * s.apix)
    if s.write_maps:
        dataset = load_dataset(out)
        maps_progress = Progress(len(frames), "ground-truth maps", unit="maps")
        for f in frames:
            vol = dataset.frame_map(f, device)
            write_map(os.path.join(out, outputs.gt_map_file(f)), vol.cpu().numpy(), s.apix, origin)
            maps_progress.update(1)
    files = dict(outputs.FILES)
    if s.write_maps:
        files["gt_maps"] = outputs.GT_MAPS + "/frame_NNN.mrc"
    settings_dict = asdict(s)
    settings_dict["frames"] = frames
    return {
        "command": "yardstick build", "dataset": "AdK-1D", "trajectory": traj.source, "n_frames": len(frames),
        "frames": frames, "particles_per_frame": s.particles_per_frame, "n_particles": n, "n_atoms": len(ref),
        "box": s.size, "apix": s.apix, "atom_sigma_A": s.atom_sigma(), "settings": settings_dict,
        "snr": {"requested": s.snr, "convention": s.snr_convention, "box_snr": s.box_snr(),
                "box_snr_measured_mean": sim_facts["snr_measured_mean"],
                "cryobench_nominal_snr": s.box_snr() / CRYOBENCH_CROP_FACTOR,
                "definition": "var(clean CTF-modulated image) / var(noise) over the whole box of each image, white "
                              "noise after the CTF (fraction before the CTF %g); CryoBench's nominal SNR (noise "
                              "added at 256 px, Fourier-cropped to 128 px) = box SNR / 4" % s.noise_before_ctf},
        "lid_nmp_A_range": [float(np.nanmin(traj.lid_nmp[frames])), float(np.nanmax(traj.lid_nmp[frames]))],
        "center_A": center.tolist(), "map_origin_A": list(origin), "radius_A": facts["radius_A"],
        "reach_A": facts["reach_A"], "half_width_A": facts["half_width_A"], "batch_size": sim_facts["batch_size"],
        "seconds": {"simulate": sim_facts["seconds"], "maps": time.time() - t_maps, "total": time.time() - t0},
        "particles_per_second": sim_facts["particles_per_second"], "files": files,
    }


@dataclass
class Dataset:
    """A built yardstick folder: ground truth and maps on the fly."""
    folder: str
    frame_ids: np.ndarray
    coords: np.ndarray          # (K, A, 3) of the frames in frame_ids, model frame (A)
    lid_nmp: np.ndarray
    reference: np.ndarray       # (A, 3)
    weights: np.ndarray
    center: np.ndarray
    sigma: float
    size: int
    apix: float
    names: np.ndarray = None
    resids: np.ndarray = None
    _truth: dict = field(default=None, repr=False)

    @property
    def map_origin(self):
        return tuple(self.center - (self.size // 2) * self.apix)

    def frame_coords(self, frame):
        pos = np.nonzero(self.frame_ids == frame)[0]
        if len(pos) == 0:
            raise EngineInputError("frame %d is not in this dataset (frames %s)" % (frame, self.frame_ids.tolist()))
        return self.coords[pos[0]]

    def atoms_map(self, coords, device="cpu", dtype=torch.float32):
        """Map ``(D, D, D)`` (torch) of atoms at ``coords`` (model frame, same atoms), centred as the particles."""
        xyz = torch.as_tensor(np.asarray(coords, dtype=np.float64) - self.center, device=device, dtype=dtype)
        return gaussian_volume(xyz, torch.as_tensor(self.weights, device=device, dtype=dtype), self.sigma,
                               self.size, self.apix)

    def frame_map(self, frame, device="cpu", dtype=torch.float32):
        """Ground-truth map of trajectory frame ``frame`` (what ``gt_maps/frame_NNN.mrc`` holds)."""
        return self.atoms_map(self.frame_coords(frame), device, dtype)

    def ground_truth(self):
        """Per-particle ground truth: dict of columns of ``ground_truth.csv`` (``frame`` as int)."""
        if self._truth is None:
            path = os.path.join(self.folder, outputs.GROUND_TRUTH)
            with open(path) as fh:
                header = fh.readline().strip().split(",")
            data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
            self._truth = {h: data[:, i] for i, h in enumerate(header)}
            self._truth["frame"] = self._truth["frame"].astype(np.int64)
        return self._truth

    def lid_nmp_of(self, coords):
        return lid_nmp_distance(coords, self.names, self.resids)

    def reference_model(self):
        """The reference heavy atoms as an :class:`AtomModel` (as saved by the build)."""
        with np.load(os.path.join(self.folder, outputs.REFERENCE_ATOMS)) as d:
            return AtomModel(**{k: d[k] for k in d.files})


def load_dataset(folder):
    """Reopen a built yardstick folder -> :class:`Dataset`."""
    path = os.path.join(folder, outputs.DATASET)
    if not os.path.exists(path):
        raise EngineInputError("%s is not a yardstick folder (no %s)" % (folder, outputs.DATASET))
    with np.load(path) as d:
        return Dataset(folder=folder, frame_ids=d["frame_ids"], coords=d["coords"], lid_nmp=d["lid_nmp_A"],
                       reference=d["reference"], weights=d["weights"], center=d["center"], sigma=float(d["sigma"]),
                       size=int(d["size"]), apix=float(d["apix"]), names=d["names"], resids=d["resids"])
