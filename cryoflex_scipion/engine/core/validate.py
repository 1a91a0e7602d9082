"""Input validation in one place: settings, output paths, arrays, maps and mode lists.

Every check raises :class:`~.runtime.EngineInputError` with a one-line message that names the option
or file at fault; the engine's entry point prints it as ``ERROR: ...`` with exit status 2 before any
heavy work.  Options mean the same thing in every command (``--batch-size``, ``--apix``, ``--lr``...),
so their rules are written once here, keyed by the option's name, and applied to every command's
arguments by :func:`check_options`; checks that need the data (a mode list against the modes in a
file, a threshold against a map) are functions the commands call once they have read it.
"""
import math
import os

import numpy as np

from .numbers import parse_number_list
from .errors import EngineInputError

__all__ = ["EngineInputError", "check_options", "check_output", "check_particles", "finite_array", "check_map",
           "select_modes", "describe_numbers", "load_array", "RIGID_BODY_MODES"]

RIGID_BODY_MODES = 6  # modes 1-6 of an elastic network are rigid-body motions (zero eigenvalue)


def _number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _rule(test, text):
    return test, text


_AT_LEAST_1 = _rule(lambda v: v >= 1, "must be at least 1")
_AT_LEAST_0 = _rule(lambda v: v >= 0, "must be 0 or more")
_POSITIVE = _rule(lambda v: v > 0, "must be positive")
_FRACTION = _rule(lambda v: 0 <= v <= 1, "must be between 0 and 1")
_BELOW_1 = _rule(lambda v: 0 <= v < 1, "must be at least 0 and below 1")
_AT_LEAST_8 = _rule(lambda v: v >= 8, "must be at least 8 pixels")
_ZERO_OR_AT_LEAST_8 = _rule(lambda v: v == 0 or v >= 8, "must be 0 (the default or none) or at least 8 pixels")

# option (argparse dest) -> (test, what the value must be).  A None value (an unset optional) is not
# checked; every number must also be finite.
OPTION_RULES = {
    "batch_size": _AT_LEAST_1, "n_particles": _AT_LEAST_1, "particles_per_frame": _AT_LEAST_1,
    "box": _AT_LEAST_8, "size": _AT_LEAST_8, "search_size": _ZERO_OR_AT_LEAST_8, "coarse_size": _ZERO_OR_AT_LEAST_8,
    "apix": _POSITIVE, "snr": _POSITIVE, "voltage": _POSITIVE, "cs": _AT_LEAST_0, "sigma": _POSITIVE,
    "amplitude_contrast": _BELOW_1, "noise_before_ctf": _FRACTION, "max_shift": _AT_LEAST_0,
    "defocus_min": _AT_LEAST_0, "defocus_max": _AT_LEAST_0, "astigmatism": _AT_LEAST_0,
    "amplitude_std": _AT_LEAST_0, "threads": _AT_LEAST_0, "pad": _rule(lambda v: v >= 1, "must be at least 1"),
    "resolution": _POSITIVE, "cutoff": _POSITIVE, "gamma": _POSITIVE, "block_size": _AT_LEAST_1,
    "cutoff_percentile": _rule(lambda v: 0 < v <= 100, "must be above 0 and at most 100"),
    "collectivity_threshold": _FRACTION, "animation_frames": _AT_LEAST_1, "animation_rmsd": _AT_LEAST_0,
    "n_modes": _AT_LEAST_1, "n_atoms": _AT_LEAST_1, "refine_steps": _AT_LEAST_0,
    "angular_step": _rule(lambda v: 0 < v <= 180, "must be above 0 and at most 180 degrees"),
    "starts": _AT_LEAST_1, "search_levels": _AT_LEAST_1, "coarse_iterations": _AT_LEAST_0,
    "screen_iterations": _AT_LEAST_0, "fine_iterations": _AT_LEAST_0, "outlier_threshold": _POSITIVE,
    "intermediates": _AT_LEAST_0,
    "amplitude_bound": _POSITIVE, "dims": _AT_LEAST_1, "k": _AT_LEAST_1, "min_size": _AT_LEAST_1,
    "core_fraction": _rule(lambda v: 0 < v <= 1, "must be above 0 and at most 1"),
    "epochs": _AT_LEAST_1, "patience": _AT_LEAST_1, "time_limit": _POSITIVE, "samples_per_epoch": _AT_LEAST_1,
    "val_fraction": _BELOW_1, "val_count": _AT_LEAST_1, "lr": _POSITIVE, "l2_lr": _POSITIVE,
    "l2_iterations": _AT_LEAST_0, "iterations": _AT_LEAST_1, "steps": _AT_LEAST_1, "eps": _POSITIVE,
    "width": _AT_LEAST_1, "depth": _AT_LEAST_1, "sinkhorn_iters": _AT_LEAST_1, "rigidity": _AT_LEAST_0,
    "mask_rigidity": _AT_LEAST_0, "warmup_epochs": _AT_LEAST_0, "weight_decay": _AT_LEAST_0,
    "dropout": _BELOW_1, "features": _AT_LEAST_1, "noise": _AT_LEAST_0, "padding": _AT_LEAST_0,
    "label_distance": _POSITIVE, "checkpoint_seconds": _AT_LEAST_0, "animation_frame_count": _AT_LEAST_1,
}


def _option_name(dest):
    return "--" + dest.replace("_", "-")


def check_options(args):
    """Check every numeric option of a parsed command line against :data:`OPTION_RULES` and its output path.

    Options that are paths or text in one command and numbers in another (``--features``) are checked
    only where they are numbers.
    """
    for dest, value in sorted(vars(args).items()):
        if not _number(value):
            continue
        name = _option_name(dest)
        if not math.isfinite(float(value)):
            raise EngineInputError("%s must be a finite number (got %s)" % (name, value))
        rule = OPTION_RULES.get(dest)
        if rule is not None and not rule[0](value):
            raise EngineInputError("%s %s (got %s)" % (name, rule[1], _show(value)))
    if getattr(args, "out", None):
        check_output(args.out, getattr(args, "output_kind", "folder"))


def _show(value):
    return ("%g" % value) if isinstance(value, (float, np.floating)) else str(value)


def check_output(path, kind="folder"):
    """Refuse an output path that cannot be written as ``kind`` ('folder' or 'file') without destroying
    something else: a folder output naming an existing file, a file output naming a folder."""
    if kind == "folder" and os.path.exists(path) and not os.path.isdir(path):
        raise EngineInputError("-o %s is an existing file; the output is a folder: give a folder name" % path)
    if kind == "file":
        if os.path.isdir(path):
            raise EngineInputError("-o %s is a folder; give the output file's name" % path)
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise EngineInputError("-o %s: %s is a file, not a folder" % (path, parent))


def finite_array(values, what):
    """Refuse NaN or infinite entries, saying how many there are in ``what``."""
    values = np.asarray(values)
    if np.iscomplexobj(values):
        raise EngineInputError("%s holds complex numbers; real values are needed" % what)
    bad = ~np.isfinite(values)
    if bad.any():
        raise EngineInputError("%s has %d NaN or infinite value%s" % (what, int(bad.sum()), "s" * (bad.sum() > 1)))
    return values


def check_map(volume, apix, path, apix_option="--apix"):
    """A map read from ``path`` is usable: real, finite, not constant, with a positive voxel size."""
    finite_array(volume, path)
    if not (apix is not None and math.isfinite(apix) and apix > 0):
        raise EngineInputError("%s: the voxel size in the header is %s; give it with %s"
                               % (path, "missing" if apix is None else "%g A" % apix, apix_option))
    if float(np.ptp(volume)) == 0.0:
        raise EngineInputError("%s is constant (every voxel %g): there is no density" % (path, float(volume.flat[0])))


def describe_numbers(numbers):
    """``[7, 8, 9, 12]`` -> ``'7-9, 12'``: a short form for messages (never 87 numbers)."""
    numbers = sorted(int(n) for n in numbers)
    runs, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            runs.append(str(start) if start == n else "%d-%d" % (start, n))
            start = None
    return ", ".join(runs)


def select_modes(text, n_available, what="mode list", allow_rigid=False, source="the modes file"):
    """Parse a mode list such as ``'7-9'`` (1-based, as ProDy/Scipion number modes) against a file of
    ``n_available`` modes; returns 0-based indices.  Refuses modes beyond the file and, for a file of more
    than 6 modes (a whole normal-mode analysis, whose modes 1-6 are rigid-body motions), lists made only of
    modes 1-6 unless ``allow_rigid``.  A file of 6 modes or fewer holds modes already chosen: any is fine."""
    try:
        numbers = parse_number_list(text, what)
    except ValueError as exc:
        raise EngineInputError(str(exc)) from None
    if numbers is None:
        return None
    if min(numbers) < 1:
        raise EngineInputError("%s %r: modes are numbered from 1" % (what, text))
    beyond = [n for n in numbers if n > n_available]
    if beyond:
        raise EngineInputError("%s %r asks for mode%s %s, but %s has %d (1-%d)" % (
            what, text, "s" * (len(beyond) > 1), describe_numbers(beyond), source, n_available, n_available))
    if not allow_rigid and n_available > RIGID_BODY_MODES and max(numbers) <= RIGID_BODY_MODES:
        raise EngineInputError("%s %r names only rigid-body modes (1-%d), which do not deform the structure; "
                               "use modes from 7" % (what, text, RIGID_BODY_MODES))
    return [n - 1 for n in numbers]


_CTF_RULES = (  # CTFParams field, what it is called, test (on arrays), what it must be
    ("defocus_u", "defocus", np.isfinite, "finite"),
    ("defocus_v", "defocus", np.isfinite, "finite"),
    ("defocus_angle", "defocus angle", np.isfinite, "finite"),
    ("voltage", "voltage", lambda v: v > 0, "positive (kV)"),
    ("cs", "spherical aberration", lambda v: v >= 0, "0 or more (mm)"),
    ("amplitude_contrast", "amplitude contrast", lambda v: (v >= 0) & (v < 1), "at least 0 and below 1"),
    ("phase_shift", "phase shift", np.isfinite, "finite"),
)


def check_particles(table, path, need_poses=False, use_ctf=True):
    """A particle table's values are physical before any image is read: at least one particle, a positive
    pixel size, finite poses (where they are used) and a usable CTF (where it is used).  Stacks are checked
    against the table when it is read (``read_particles(..., check_files=True)``)."""
    n = len(table)
    if n == 0:
        raise EngineInputError("%s holds no particles" % path)
    apix = np.asarray(table.apix, dtype=np.float64)
    if not (np.all(np.isfinite(apix)) and np.all(apix > 0)):
        raise EngineInputError("%s: the pixel size is %g A; give the right one with --apix"
                               % (path, float(apix[~(np.isfinite(apix) & (apix > 0))][0])))
    if need_poses and table.has_pose:
        bad = ~np.isfinite(np.concatenate([table.euler, table.origin_A], 1)).all(1)
        if bad.any():
            raise EngineInputError("%s: %d of %d particles have NaN or infinite angles or origins (first: particle %d)"
                                   % (path, int(bad.sum()), n, int(np.argmax(bad)) + 1))
    if use_ctf and table.has_ctf:
        for name, label, test, must in _CTF_RULES:
            values = np.broadcast_to(np.asarray(getattr(table.ctf, name), dtype=np.float64), (n,))
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(values) & test(values)
            if not ok.all():
                first = int(np.argmin(ok))
                bad = int((~ok).sum())
                raise EngineInputError("%s: the %s of %d particle%s is %g (first: particle %d); it must be %s"
                                       % (path, label, bad, "s" * (bad > 1),
                                          values[first], first + 1, must))


def load_array(path, what="array"):
    """A numeric ``.npy`` array (features, modes, frames) from a user's file, or an :class:`EngineInputError`
    that names the file: missing, not a .npy (text, pickles), or not real numbers."""
    if not os.path.exists(path):
        raise EngineInputError("%s file not found: %s" % (what, path))
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise EngineInputError("%s: not a readable .npy %s (%s)" % (path, what, str(exc).splitlines()[0])) from None
    if not hasattr(values, "dtype") or values.dtype.kind not in "biuf":
        raise EngineInputError("%s: the %s must be an array of real numbers (got %s)"
                               % (path, what, getattr(values, "dtype", type(values).__name__)))
    return values
