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

from ..cli import add_common_args, add_imaging_args, fail, imaging_settings, select_device
from ..core.atoms import read_atoms
from ..core.outputs import SUMMARY, Simulate
from ..core.runtime import device_name, log, write_summary
from ..core.simulation import Conformations, SimulationSettings, simulate_particles
from ..core.validate import finite_array, load_array, select_modes


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
    add_imaging_args(p)
    conf = p.add_argument_group("conformations (optional)")
    conf.add_argument("--modes", help=".npy of normal modes (M x atoms x 3) for the selected atoms")
    conf.add_argument("--mode-list", default=None,
                      help="modes of the file to deform along, numbered from 1 as in the file, e.g. '7-9' for the "
                           "first non-rigid modes of an nma modes.npy (default: every mode in the file)")
    conf.add_argument("--amplitude-std", help="std of the Gaussian amplitudes per mode (one value or one per mode)")
    conf.add_argument("--amplitude-range", help="amplitudes uniform in +/- this (one value or one per mode)")
    conf.add_argument("--frames", nargs="+",
                      help="conformations: a .npy (K x atoms x 3) or structure files with the same atoms")
    add_common_args(p, batch_size=128)


def _load_frames(paths, selection, n_atoms):
    if len(paths) == 1 and paths[0].endswith(".npy"):
        frames = load_array(paths[0], "trajectory frames")
    else:
        try:
            frames = np.stack([read_atoms(f, selection).coords for f in paths])
        except (ValueError, ImportError) as exc:
            fail(str(exc))
    if frames.ndim != 3 or frames.shape[1:] != (n_atoms, 3):
        fail("trajectory frames have shape %s; expected (K, %d, 3) to match the model's %d selected atoms"
             % (frames.shape, n_atoms, n_atoms))
    return frames


def _validate(args):
    problems = []
    if args.box < 16:
        problems.append("--box must be at least 16 pixels")
    if args.defocus_min > args.defocus_max:
        problems.append("need 0 <= --defocus-min <= --defocus-max")
    if args.modes and not (args.amplitude_std or args.amplitude_range):
        problems.append("--modes needs --amplitude-std or --amplitude-range")
    if args.modes and args.frames:
        problems.append("give --modes or --frames, not both")
    if args.mode_list and not args.modes:
        problems.append("--mode-list needs --modes")
    if problems:
        fail("; ".join(problems))


def main(args):
    _validate(args)
    device = select_device(args.device, args.threads)
    try:
        model = read_atoms(args.model, args.selection)
    except (ValueError, ImportError) as exc:
        fail(str(exc))
    center = model.center()
    modes = frames = None
    if args.modes:
        modes = load_array(args.modes, "modes")
        if modes.ndim != 3 or modes.shape[1:] != (len(model), 3):
            fail("%s: modes have shape %s; expected (M, %d, 3) for the %d selected atoms"
                 % (args.modes, modes.shape, len(model), len(model)))
        chosen = select_modes(args.mode_list, len(modes), "--mode-list")
        if chosen is not None:
            modes = modes[chosen]
        finite_array(modes, args.modes + " (the modes used)")
    if args.frames:
        frames = _load_frames(args.frames, args.selection, len(model))
    spreads = {}
    for name in ("amplitude_std", "amplitude_range"):
        text = getattr(args, name)
        if text:
            try:
                values = _floats(text)
            except ValueError:
                values = [float("nan")]
            if not values or not all(np.isfinite(v) and v >= 0 for v in values):
                fail("--%s takes numbers of 0 or more, one or one per mode (got %r)" % (name.replace("_", "-"), text))
            if modes is not None and len(values) not in (1, len(modes)):
                fail("--%s gives %d values for %d modes: give one, or one per mode"
                     % (name.replace("_", "-"), len(values), len(modes)))
            spreads[name] = values
    conformations = Conformations(model.coords, model.weights, modes=modes,
                                  amplitude_std=spreads.get("amplitude_std"),
                                  amplitude_range=spreads.get("amplitude_range"), frames=frames, center=center)
    settings = SimulationSettings(
        n_particles=args.n_particles, size=args.box, apix=args.apix, snr=args.snr,
        seed=args.seed, **imaging_settings(args))
    radius = np.sqrt(((model.coords - center) ** 2).sum(1)).max() + 3 * settings.atom_sigma() + args.max_shift
    if radius > args.box * args.apix / 2:
        log("WARNING: the model reaches %.0f A from its centre but the box half-width is %.0f A: "
            "images will be cut (increase --box or --apix)" % (radius, args.box * args.apix / 2))

    log("simulating %d particles of %d px at %.3f A/px from %d atoms (%s) on %s"
        % (settings.n_particles, args.box, args.apix, len(model), conformations.kind, device_name(device)))
    _, facts = simulate_particles(args.out, conformations, settings, device, args.batch_size)
    summary = {
        "command": "simulate", "n_particles": settings.n_particles, "box": args.box, "apix": args.apix,
        "n_atoms": len(model), "conformations": conformations.kind, "snr_requested": settings.snr,
        "snr_measured_mean": facts["snr_measured_mean"], "noise_before_ctf": settings.noise_before_ctf,
        "ctf": settings.ctf, "atom_sigma_A": settings.atom_sigma(), "model_center_A": center.tolist(),
        "reference_map_origin_A": facts["reference_map_origin_A"], "device": device_name(device),
        "batch_size": facts["batch_size"], "seed": args.seed, "seconds": facts["seconds"],
        "particles_per_second": facts["particles_per_second"], "files": Simulate.FILES,
    }
    write_summary(os.path.join(args.out, SUMMARY), summary)
    log("done: %d particles in %.1f s (%.1f/s)%s" % (
        settings.n_particles, facts["seconds"], facts["particles_per_second"],
        "" if settings.snr is None else ", measured SNR %.4f (requested %.4f)" % (facts["snr_measured_mean"],
                                                                                   settings.snr)))
    return 0
