"""Simulate particle images with known ground truth from an atomic model.

Writes <out>/particles.mrcs + particles.star (RELION 3.1, poses and CTF),
ground_truth.csv (per particle: angles, origin, defocus, and normal-mode
amplitudes or trajectory frame), reference.mrc (the noiseless map of the
reference model in the same box, placed over the input model) and
summary.json.  SNR = var(clean CTF-modulated image) / var(noise) over the
box; see cryoflex_scipion.engine.core.simulation for the noise model.
"""
import os

import numpy as np
import torch

from ..cli import add_common_args, fail, select_device
from ..core.runtime import Progress, device_name, log, run_batches, write_summary
from ..core.atoms import read_atoms
from ..core.io.mrc import StackWriter, write_map
from ..core.io.particles import ParticleTable
from ..core.projection import gaussian_volume
from ..core.simulation import Conformations, SimulationSettings, add_noise, render_batch, sample_parameters


def _floats(text):
    return [float(v) for v in str(text).replace(",", " ").split()]


def add_args(p):
    p.add_argument("--model", required=True, help="atomic model: .pdb, .cif or engine .npz")
    p.add_argument("--selection", default="not hydrogen",
                   help="ProDy selection of the atoms to image (default: %(default)s)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("-n", "--n-particles", type=int, default=1000)
    p.add_argument("--box", type=int, default=128, help="image size in pixels (default: %(default)s)")
    p.add_argument("--apix", type=float, default=1.5, help="pixel size in A (default: %(default)s)")
    p.add_argument("--snr", type=float, default=None, help="signal-to-noise ratio; omit for noiseless images")
    p.add_argument("--noise-before-ctf", type=float, default=0.5,
                   help="fraction of the noise variance added before the CTF (default: %(default)s)")
    p.add_argument("--no-ctf", action="store_true", help="do not apply a CTF")
    p.add_argument("--defocus-min", type=float, default=10000.0, help="A (default: %(default)s)")
    p.add_argument("--defocus-max", type=float, default=25000.0, help="A (default: %(default)s)")
    p.add_argument("--astigmatism", type=float, default=0.0, help="max defocusU - defocusV in A")
    p.add_argument("--voltage", type=float, default=300.0, help="kV")
    p.add_argument("--cs", type=float, default=2.7, help="spherical aberration in mm")
    p.add_argument("--amplitude-contrast", type=float, default=0.1)
    p.add_argument("--max-shift", type=float, default=0.0, help="shifts uniform in +/- this many A on x and y")
    p.add_argument("--sigma", type=float, default=None, help="Gaussian width of an atom in A (default: one pixel)")
    conf = p.add_argument_group("conformations (optional)")
    conf.add_argument("--modes", help=".npy of normal modes (M x atoms x 3) for the selected atoms")
    conf.add_argument("--amplitude-std", help="std of the Gaussian amplitudes per mode (one value or one per mode)")
    conf.add_argument("--amplitude-range", help="amplitudes uniform in +/- this (one value or one per mode)")
    conf.add_argument("--frames", nargs="+",
                      help="conformations: a .npy (K x atoms x 3) or structure files with the same atoms")
    add_common_args(p, batch_size=128)


def _load_frames(paths, selection, n_atoms):
    if len(paths) == 1 and paths[0].endswith(".npy"):
        frames = np.load(paths[0])
    else:
        frames = np.stack([read_atoms(f, selection).coords for f in paths])
    if frames.ndim != 3 or frames.shape[1:] != (n_atoms, 3):
        fail("trajectory frames have shape %s; expected (K, %d, 3) to match the model's selected atoms"
             % (frames.shape, n_atoms))
    return frames


def _validate(args):
    problems = []
    if args.n_particles < 1:
        problems.append("--n-particles must be at least 1")
    if args.box < 16:
        problems.append("--box must be at least 16 pixels")
    if args.apix <= 0:
        problems.append("--apix must be positive")
    if args.snr is not None and args.snr <= 0:
        problems.append("--snr must be positive (omit it for noiseless images)")
    if not 0 <= args.noise_before_ctf <= 1:
        problems.append("--noise-before-ctf must be between 0 and 1")
    if args.defocus_min > args.defocus_max or args.defocus_min < 0:
        problems.append("need 0 <= --defocus-min <= --defocus-max")
    if args.modes and not (args.amplitude_std or args.amplitude_range):
        problems.append("--modes needs --amplitude-std or --amplitude-range")
    if args.modes and args.frames:
        problems.append("give --modes or --frames, not both")
    if problems:
        fail("; ".join(problems))


def main(args):
    _validate(args)
    device = select_device(args.device, args.threads)
    try:
        model = read_atoms(args.model, args.selection)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    center = model.center()
    modes = frames = None
    if args.modes:
        modes = np.load(args.modes)
        if modes.ndim != 3 or modes.shape[1:] != (len(model), 3):
            fail("modes have shape %s; expected (M, %d, 3) for the %d selected atoms"
                 % (modes.shape, len(model), len(model)))
    if args.frames:
        frames = _load_frames(args.frames, args.selection, len(model))
    conformations = Conformations(model.coords, model.weights, modes=modes,
                                  amplitude_std=_floats(args.amplitude_std) if args.amplitude_std else None,
                                  amplitude_range=_floats(args.amplitude_range) if args.amplitude_range else None,
                                  frames=frames, center=center)
    settings = SimulationSettings(
        n_particles=args.n_particles, size=args.box, apix=args.apix, snr=args.snr,
        noise_before_ctf=args.noise_before_ctf, ctf=not args.no_ctf, defocus_min=args.defocus_min,
        defocus_max=args.defocus_max, astigmatism=args.astigmatism, voltage=args.voltage, cs=args.cs,
        amplitude_contrast=args.amplitude_contrast, max_shift=args.max_shift, sigma=args.sigma, seed=args.seed)
    radius = np.sqrt(((model.coords - center) ** 2).sum(1)).max() + 3 * settings.atom_sigma() + args.max_shift
    if radius > args.box * args.apix / 2:
        log("WARNING: the model reaches %.0f A from its centre but the box half-width is %.0f A: "
            "images will be cut (increase --box or --apix)" % (radius, args.box * args.apix / 2))

    os.makedirs(args.out, exist_ok=True)
    params = sample_parameters(settings, conformations)
    n = settings.n_particles
    log("simulating %d particles of %d px at %.3f A/px from %d atoms (%s) on %s"
        % (n, args.box, args.apix, len(model), conformations.kind, device_name(device)))
    stack_path = os.path.join(args.out, "particles.mrcs")
    measured = np.full(n, np.nan)
    progress = Progress(n, "simulate")
    gen = torch.Generator(device=device)

    with StackWriter(stack_path, n, args.box, args.apix) as writer:
        def work(start, stop):
            index = np.arange(start, stop)
            gen.manual_seed(args.seed * 1000003 + start)  # reproducible for a given batch size
            proj, ctf = render_batch(conformations, settings, params, index, device)
            images, _, snr = add_noise(proj, ctf, settings.snr, settings.noise_before_ctf, gen)
            writer.write(images.cpu().numpy())
            if snr is not None:
                measured[index] = snr.cpu().numpy()
            progress.update(len(index))
        used_batch = run_batches(n, args.batch_size, work, device, "simulate")

    table = ParticleTable(np.full(n, "particles.mrcs"), np.arange(n), np.full(n, args.apix),
                          np.full(n, args.box), params["euler"], params["origin_A"],
                          params["ctf"] if settings.ctf else None, np.ones(n, dtype=np.int64),
                          base_dir=args.out)
    table.to_star(os.path.join(args.out, "particles.star"))
    _write_ground_truth(os.path.join(args.out, "ground_truth.csv"), params, conformations)

    ref = gaussian_volume(torch.as_tensor(model.coords - center, device=device), model.weights,
                          settings.atom_sigma(), args.box, args.apix)
    map_origin = tuple(center - (args.box // 2) * args.apix)
    write_map(os.path.join(args.out, "reference.mrc"), ref.cpu().numpy(), args.apix, map_origin)

    summary = {
        "command": "simulate", "n_particles": n, "box": args.box, "apix": args.apix,
        "n_atoms": len(model), "conformations": conformations.kind,
        "snr_requested": settings.snr,
        "snr_measured_mean": None if settings.snr is None else float(np.mean(measured)),
        "noise_before_ctf": settings.noise_before_ctf, "ctf": settings.ctf, "atom_sigma_A": settings.atom_sigma(),
        "model_center_A": center.tolist(), "reference_map_origin_A": list(map_origin),
        "device": device_name(device), "batch_size": used_batch, "seed": args.seed,
        "seconds": progress.elapsed(), "particles_per_second": progress.rate(),
        "files": {"stack": "particles.mrcs", "star": "particles.star", "ground_truth": "ground_truth.csv",
                  "reference_map": "reference.mrc"},
    }
    write_summary(os.path.join(args.out, "summary.json"), summary)
    log("done: %d particles in %.1f s (%.1f/s)%s" % (
        n, progress.elapsed(), progress.rate(),
        "" if settings.snr is None else ", measured SNR %.4f (requested %.4f)" % (np.mean(measured), settings.snr)))
    return 0


def _write_ground_truth(path, params, conformations):
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
    header = ",".join(cols)
    data = np.stack([np.asarray(v, dtype=np.float64) for v in cols.values()], -1)
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt="%.17g")
