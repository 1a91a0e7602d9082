"""Reconstruct a map from particles with known poses (direct Fourier inversion, CTF-Wiener).

Reads a RELION STAR (3.0 or 3.1) or cryoSPARC .cs file with poses, streams the
images in batches, and writes <out>/map.mrc (Wiener-filtered by the half-map
FSC), half1.mrc, half2.mrc (unfiltered), fsc.csv and summary.json with the
0.143 and 0.5 resolutions.  With --reference, also the FSC against that map.
"""
import os

import numpy as np
import torch

from ..cli import add_common_args, fail, select_device
from ..core.runtime import Progress, device_name, log, write_summary
from ..core.fourier import fourier_resize
from ..core.io.mrc import MRCError, read_map, write_map
from ..core.io.particles import read_particles
from ..core.io.star import StarError
from ..core.metrics import fsc, fsc_frequencies, resolution_at
from ..core.reconstruct_stream import assign_halves, reconstruct_table


def add_args(p):
    p.add_argument("--particles", required=True, help="RELION .star or cryoSPARC .cs with poses")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--apix", type=float, default=None, help="override the pixel size (A)")
    p.add_argument("--data-root", default=None, help="folder the image paths are relative to")
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


def main(args):
    try:
        table = read_particles(args.particles, apix=args.apix, check_files=True, data_root=args.data_root)
        box, apix = table.uniform()
    except (StarError, FileNotFoundError, MRCError) as exc:
        fail(str(exc))
    if len(table) < 2:
        fail("at least two particles are needed (one per half-set); %s has %d" % (args.particles, len(table)))
    if not table.has_pose:
        fail("%s has no angles (rlnAngleRot/Tilt/Psi): reconstruction needs poses" % args.particles)
    use_ctf = table.has_ctf and not args.no_ctf
    if not table.has_ctf and not args.no_ctf:
        log("WARNING: no CTF in %s: reconstructing without CTF correction" % args.particles)
    size = args.size or box
    if size > box or size < 8:
        fail("--size must be between 8 and the particle box (%d)" % box)
    work_apix = apix * box / size
    wiener = args.wiener if args.wiener == "fsc" else float(args.wiener)
    device = select_device(args.device, args.threads)
    halves = assign_halves(table, args.halves, args.seed)
    ctf_mode = args.ctf_mode if use_ctf else "none"
    log("reconstructing %d particles (%d px -> %d px, %.3f A/px, CTF %s) on %s"
        % (len(table), box, size, work_apix, ctf_mode, device_name(device)))
    progress = Progress(len(table), "reconstruct")
    result = reconstruct_table(table, size=size, ctf_mode=ctf_mode, pad=args.pad, wiener=wiener, device=device,
                               batch_size=args.batch_size, halves=halves, data_root=args.data_root, progress=progress)
    used = result["batch_size"]
    origin = tuple(float(v) for v in args.origin.split(",")) if args.origin else (-(size // 2) * work_apix,) * 3
    os.makedirs(args.out, exist_ok=True)
    write_map(os.path.join(args.out, "map.mrc"), result["full_map"].cpu().numpy(), work_apix, origin)
    for i, half in enumerate(result["half_maps"]):
        write_map(os.path.join(args.out, "half%d.mrc" % (i + 1)), half.cpu().numpy(), work_apix, origin)
    curve = result["fsc"]
    freqs = fsc_frequencies(size, work_apix)
    columns = [freqs, curve]
    header = "frequency_1_per_A,fsc_half_maps"
    summary = {
        "command": "reconstruct", "n_particles": len(table), "box": box, "size": size, "apix": work_apix,
        "ctf": use_ctf, "ctf_mode": ctf_mode, "pad": args.pad, "wiener": args.wiener,
        "particles_per_half": [int((halves == 0).sum()), int((halves == 1).sum())],
        "resolution_0.143_A": resolution_at(curve, size, work_apix, 0.143),
        "resolution_0.5_A": resolution_at(curve, size, work_apix, 0.5),
        "device": device_name(device), "batch_size": used,
        "seconds": progress.elapsed(), "particles_per_second": progress.rate(),
        "files": {"map": "map.mrc", "half1": "half1.mrc", "half2": "half2.mrc", "fsc": "fsc.csv"},
    }
    if args.reference:
        try:
            ref, info = read_map(args.reference, require_cubic=True)
        except MRCError as exc:
            fail(str(exc))
        if ref.shape[0] != size:
            ref = fourier_resize(torch.as_tensor(ref, dtype=torch.float64), size, ndim=3).numpy()
        ref_curve = fsc(result["full_map"].cpu(), torch.as_tensor(np.array(ref)))
        columns.append(ref_curve)
        header += ",fsc_reference"
        summary["reference_resolution_0.5_A"] = resolution_at(ref_curve, size, work_apix, 0.5)
        summary["reference_resolution_0.143_A"] = resolution_at(ref_curve, size, work_apix, 0.143)
        summary["reference_resolution_0.5_px"] = summary["reference_resolution_0.5_A"] / work_apix
    np.savetxt(os.path.join(args.out, "fsc.csv"), np.stack(columns, -1), delimiter=",", header=header,
               comments="", fmt="%.6g")
    write_summary(os.path.join(args.out, "summary.json"), summary)
    log("done: %d particles in %.1f s (%.1f/s); half-map FSC resolution %.2f A (0.143), %.2f A (0.5)%s" % (
        len(table), progress.elapsed(), progress.rate(), summary["resolution_0.143_A"], summary["resolution_0.5_A"],
        "; vs reference %.2f A (0.5)" % summary["reference_resolution_0.5_A"] if args.reference else ""))
    return 0
