"""Reconstruct a map from particles with known poses (direct Fourier inversion, CTF-Wiener).

Reads a RELION STAR (3.0 or 3.1) or cryoSPARC .cs file with poses, streams the
images in batches, and writes <out>/map.mrc (Wiener-filtered by the half-map
FSC), half1.mrc, half2.mrc (unfiltered), fsc.csv and summary.json with the
0.143 and 0.5 resolutions.  With --reference, also the FSC against that map.
"""
import os

import numpy as np

from ..cli import add_amplitude_contrast_arg, add_common_args, fail, select_device
from ..core.io.mrc import read_map
from ..core.io.particles import read_particles
from ..core.numbers import parse_origin
from ..core.outputs import SUMMARY, Reconstruct
from ..core.reconstruct_stream import assign_halves, reconstruct_table, write_reconstruction
from ..core.runtime import Progress, device_name, log, write_summary
from ..core.validate import check_particles


def add_args(p):
    p.add_argument("--particles", required=True, help="RELION .star or cryoSPARC .cs with poses")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--apix", type=float, default=None, help="override the pixel size (A)")
    p.add_argument("--data-root", default=None, help="folder the image paths are relative to")
    add_amplitude_contrast_arg(p)
    p.add_argument("--size", type=int, default=None,
                   help="reconstruct at this box size (Fourier-cropped, anti-aliased); default: the particles' box")
    p.add_argument("--no-ctf", action="store_true", help="ignore the CTF (images already corrected)")
    p.add_argument("--ctf-mode", default="full", choices=["full", "phase-flipped"],
                   help="raw images (CTF weights) or phase-flipped ones (|CTF| weights)")
    p.add_argument("--pad", type=float, default=2.0, help="Fourier padding factor (default: %(default)s)")
    p.add_argument("--wiener", default="fsc",
                   help="'fsc' (Wiener term from the half-map FSC) or a constant relative to the mean weight")
    p.add_argument("--halves", default="auto", choices=["auto", "random", "alternate"],
                   help="half-set assignment: auto uses rlnRandomSubset when present, else random")
    p.add_argument("--reference", default=None, help="map to compare with (FSC against ground truth)")
    p.add_argument("--origin", default=None,
                   help="x,y,z origin (A) written in the map headers; default: centred on the box")
    add_common_args(p, batch_size=256)


def _wiener(text):
    if text == "fsc":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        fail("--wiener takes 'fsc' or a positive number, not %r" % text)
    return value


def main(args):
    table = read_particles(args.particles, apix=args.apix, check_files=True, data_root=args.data_root,
                           amplitude_contrast=args.amplitude_contrast)
    box, apix = table.uniform()
    use_ctf = table.has_ctf and not args.no_ctf
    check_particles(table, args.particles, need_poses=True, use_ctf=use_ctf)
    if len(table) < 2:
        fail("at least two particles are needed (one per half-set); %s has %d" % (args.particles, len(table)))
    if not table.has_pose:
        fail("%s has no angles (rlnAngleRot/Tilt/Psi): reconstruction needs poses" % args.particles)
    if not table.has_ctf and not args.no_ctf:
        log("WARNING: no CTF in %s: reconstructing without CTF correction" % args.particles)
    size = args.size or box
    if size > box:
        fail("--size must be between 8 and the particle box (%d)" % box)
    work_apix = apix * box / size
    wiener = _wiener(args.wiener)
    try:
        origin = parse_origin(args.origin)
    except ValueError as exc:
        fail(str(exc))
    reference = None
    if args.reference:
        reference, _ = read_map(args.reference, require_cubic=True)
        if reference.shape[0] != box:
            fail("--reference %s is %d px but the particles are %d px" % (args.reference, reference.shape[0], box))
    device = select_device(args.device, args.threads)
    halves = assign_halves(table, args.halves, args.seed)
    ctf_mode = args.ctf_mode if use_ctf else "none"
    log("reconstructing %d particles (%d px -> %d px, %.3f A/px, CTF %s) on %s"
        % (len(table), box, size, work_apix, ctf_mode, device_name(device)))
    progress = Progress(len(table), "reconstruct")
    result = reconstruct_table(table, size=size, ctf_mode=ctf_mode, pad=args.pad, wiener=wiener,
                               device=device, batch_size=args.batch_size, halves=halves,
                               data_root=args.data_root, progress=progress)
    facts = write_reconstruction(args.out, result, origin, reference)
    summary = {
        "command": "reconstruct", "n_particles": len(table), "box": box, "size": size, "apix": work_apix,
        "ctf": use_ctf, "ctf_mode": ctf_mode, "pad": args.pad, "wiener": args.wiener,
        "particles_per_half": [int((halves == 0).sum()), int((halves == 1).sum())], **facts,
        "device": device_name(device), "batch_size": result["batch_size"],
        "seconds": progress.elapsed(), "particles_per_second": progress.rate(), "files": Reconstruct.FILES,
    }
    write_summary(os.path.join(args.out, SUMMARY), summary)
    log("done: %d particles in %.1f s (%.1f/s); half-map FSC resolution %.2f A (0.143), %.2f A (0.5)%s" % (
        len(table), progress.elapsed(), progress.rate(), summary["resolution_0.143_A"], summary["resolution_0.5_A"],
        "; vs reference %.2f A (0.5)" % summary["reference_resolution_0.5_A"] if args.reference else ""))
    return 0
