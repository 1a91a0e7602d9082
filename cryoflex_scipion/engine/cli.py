"""Command-line glue of the engine: the options every command shares and ``fail``.

Run-time services (progress, logging, batching, devices, summaries) live in
:mod:`.core.runtime`; library modules import them from there, never from here.
"""
import sys

from .core import runtime

__all__ = ["add_common_args", "add_overwrite_arg", "add_amplitude_contrast_arg", "add_imaging_args", "imaging_settings", "fail", "select_device",
           "gpu_ids"]


def fail(msg):
    """Stop with a clear one-line message (exit status 2) instead of a traceback."""
    print("ERROR: %s" % " ".join(str(msg).split("\n")), file=sys.stderr, flush=True)
    sys.exit(2)


def add_common_args(parser, batch_size=64):
    g = parser.add_argument_group("execution")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to compute; auto = the first visible GPU if any (default: auto)")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help="items per batch; halved automatically when the GPU runs out of memory "
                        "(default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    return g


def add_overwrite_arg(parser):
    """``--overwrite`` of the resumable commands: a rerun into the same output folder resumes the same job
    (same inputs and result-affecting settings, checked by fingerprint) and refuses another unless this is given."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results or checkpoint of another job in the output folder (by default a "
                             "rerun resumes only the same job, with the same inputs and settings, and refuses others)")


def add_amplitude_contrast_arg(parser):
    """``--amplitude-contrast`` of the commands that read particles: for RELION 3.0 STAR files without
    rlnAmplitudeContrast (a file's own values win)."""
    parser.add_argument("--amplitude-contrast", type=float, default=None,
                        help="amplitude contrast for a STAR file that has none (RELION 3.0 files may lack "
                             "rlnAmplitudeContrast), e.g. 0.1; the file's own values win")


def add_imaging_args(parser, noise_before_ctf=0.5, max_shift=0.0):
    """The microscope options of the commands that simulate images: noise split, CTF, shifts, atom width."""
    g = parser.add_argument_group("imaging")
    g.add_argument("--noise-before-ctf", type=float, default=noise_before_ctf,
                   help="fraction of the noise variance added before the CTF (default: %(default)s)")
    g.add_argument("--no-ctf", action="store_true", help="do not apply a CTF")
    g.add_argument("--defocus-min", type=float, default=10000.0, help="A (default: %(default)s)")
    g.add_argument("--defocus-max", type=float, default=25000.0, help="A (default: %(default)s)")
    g.add_argument("--astigmatism", type=float, default=0.0, help="max defocusU - defocusV in A")
    g.add_argument("--voltage", type=float, default=300.0, help="kV")
    g.add_argument("--cs", type=float, default=2.7, help="spherical aberration in mm")
    g.add_argument("--amplitude-contrast", type=float, default=0.1)
    g.add_argument("--max-shift", type=float, default=max_shift,
                   help="shifts uniform in +/- this many A on x and y (default: %(default)s)")
    g.add_argument("--sigma", type=float, default=None, help="Gaussian width of an atom in A (default: one pixel)")
    return g


def imaging_settings(args):
    """The options of :func:`add_imaging_args` as keyword arguments of ``SimulationSettings``."""
    return {"noise_before_ctf": args.noise_before_ctf, "ctf": not args.no_ctf, "defocus_min": args.defocus_min,
            "defocus_max": args.defocus_max, "astigmatism": args.astigmatism, "voltage": args.voltage,
            "cs": args.cs, "amplitude_contrast": args.amplitude_contrast, "max_shift": args.max_shift,
            "sigma": args.sigma}


def select_device(name, threads=0):
    """:func:`.core.runtime.select_device`, failing with a message."""
    try:
        return runtime.select_device(name, threads)
    except runtime.EngineInputError as exc:
        fail(str(exc))


def gpu_ids(spec):
    """:func:`.core.runtime.gpu_ids`, failing with a message."""
    try:
        return runtime.gpu_ids(spec)
    except runtime.EngineInputError as exc:
        fail(str(exc))
