"""Yardsticks for continuous heterogeneity: datasets with per-particle ground truth (AdK-1D).

  yardstick build --trajectory T.npz --reference R.pdb|.npz -o OUT [--frames all] \
      [--particles-per-frame 1000] [--box 128] [--apix 1.0] [--snr 0.01] [--snr-convention cryobench|box] \
      [--no-maps]
      particles from every frame (or the --frames list) of a trajectory (.npz: coords frames x atoms x 3,
      names, optionally lid_nmp_A) whose atoms are the reference's (hydrogens dropped by name):
      OUT/particles.mrcs + particles.star (true poses, CTF), ground_truth.csv (poses, defocus, frame,
      lid_nmp_A), frames.csv, reference.mrc + reference.npz (frame-0 heavy atoms), dataset.npz (maps on
      the fly), gt_maps/frame_NNN.mrc (one ground-truth map per frame, same box and centring as the
      particles; --no-maps skips them: 98 x 128^3 float32 is 0.8 GB) and summary.json.
      SNR = var(clean CTF-modulated image) / var(noise) over the box, white noise after the CTF;
      --snr-convention cryobench (default): the SNR is CryoBench's nominal one (their noise is added at
      256 px and Fourier-cropped to 128 px, a quarter of its variance), i.e. the box SNR is 4 x --snr;
      box: --snr is the box SNR.  See cryoflex_scipion.engine.yardstick.pipeline.
"""
import os

from ..cli import add_common_args, add_imaging_args, fail, imaging_settings, select_device
from ..core.runtime import EngineInputError, device_name, log, write_summary
from ..yardstick import outputs
from ..yardstick.pipeline import SNR_CONVENTIONS, BuildSettings, build
from ..yardstick.trajectory import load_trajectory


def add_args(p):
    sub = p.add_subparsers(dest="yardstick_action", metavar="action")
    b = sub.add_parser("build", help="simulate an AdK-1D-style dataset from a trajectory")
    b.add_argument("--trajectory", required=True, help=".npz with coords (frames x atoms x 3) and names")
    b.add_argument("--reference", required=True,
                   help="model with the trajectory's atoms (.pdb/.cif, or an engine .npz on ProDy-less nodes)")
    b.add_argument("-o", "--out", required=True, help="output folder")
    b.add_argument("--frames", default="all", help="0-based frames, e.g. 'all', '0-97', '0,10,20' (default: all)")
    b.add_argument("--particles-per-frame", type=int, default=1000, help="(default: %(default)s, as CryoBench)")
    b.add_argument("--box", type=int, default=128, help="image size in px, even (default: %(default)s)")
    b.add_argument("--apix", type=float, default=1.0,
                   help="pixel size in A (default: %(default)s; the AdK open state reaches 36 A, + 3 atom widths "
                        "+ shifts = 46 A inside the 64 A half-box)")
    b.add_argument("--snr", type=float, default=0.01, help="signal-to-noise ratio (default: %(default)s)")
    b.add_argument("--snr-convention", default="cryobench", choices=SNR_CONVENTIONS,
                   help="cryobench: CryoBench's nominal SNR (box SNR = 4 x SNR); box: the SNR over the box of "
                        "the images written (default: %(default)s)")
    b.add_argument("--no-maps", action="store_true", help="do not write gt_maps/ (compute maps on the fly instead)")
    add_imaging_args(b, noise_before_ctf=0.0, max_shift=5.0)  # CryoBench: all noise after the CTF
    add_common_args(b, batch_size=256)


def _build(args):
    device = select_device(args.device, args.threads)
    settings = BuildSettings(
        particles_per_frame=args.particles_per_frame, frames=args.frames, size=args.box, apix=args.apix,
        snr=args.snr, snr_convention=args.snr_convention, write_maps=not args.no_maps, seed=args.seed,
        **imaging_settings(args))
    try:
        traj = load_trajectory(args.trajectory, args.reference)
        summary = build(args.out, traj, settings, device, args.batch_size)
    except EngineInputError as exc:
        fail(str(exc))
    summary["device"] = device_name(device)
    summary["seed"] = args.seed
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    snr = summary["snr"]
    log("done: %d particles in %.1f s; box SNR measured %.4g (requested %.4g, %s SNR %g)"
        % (summary["n_particles"], summary["seconds"]["total"], snr["box_snr_measured_mean"], snr["box_snr"],
           snr["convention"], snr["requested"]))
    return 0


def main(args):
    if getattr(args, "yardstick_action", None) == "build":
        return _build(args)
    fail("yardstick needs an action: build")
