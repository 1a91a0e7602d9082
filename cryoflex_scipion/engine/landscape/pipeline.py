"""A whole conformational landscape, as the command line, the protocol and the benchmarks run it.

:func:`run_landscape` reduces the per-particle coordinates (amplitudes or any method's latents),
groups the particles and writes everything into the output folder (names in :mod:`.outputs`):

- optionally one reconstruction per group from the particles' poses and CTF (map, half-maps, FSC);
- for normal-mode amplitudes (a reference model and its modes), each group's centroid structure and
  multi-model PDB animations along the principal axes from -2 to +2 standard deviations.

Unusable input raises :class:`..core.runtime.EngineInputError` before any heavy work.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ..core.atoms import AtomModel, deform
from ..core.reconstruct_stream import reconstruct_table, write_reconstruction
from ..core.runtime import EngineInputError, Progress, device_name, log
from ..nma.formats import pdb_lines, write_animation
from . import outputs
from .groups import gmm_groups, keep_core, kmeans_groups, parse_ranges, quantile_groups, range_groups
from .reduce import fit_pca, fit_umap

__all__ = ["LandscapeSettings", "check_features", "reduce_features", "make_groups", "run_landscape"]

GROUPINGS = ("kmeans", "gmm", "ranges", "quantiles", "none")


@dataclass
class LandscapeSettings:
    method: str = "pca"             # pca | umap
    dims: int = 2
    standardise: bool = False       # unit variance per coordinate before PCA
    grouping: str = "kmeans"        # one of GROUPINGS
    k: int = 10                     # groups (kmeans, gmm); maximum groups (quantiles)
    ranges: list = field(default_factory=list)  # one 'axis:min:max,...' string per group (ranges)
    min_size: int = 100             # quantiles: particles per group at least
    core_fraction: float = 1.0      # keep this fraction of each group closest to its centre
    seed: int = 0
    # group reconstructions
    ctf_mode: str = "full"          # full | phase-flipped | none
    size: int = None                # reconstruction box (Fourier-cropped); None: full
    pad: float = 2.0
    batch_size: int = 256
    data_root: str = None
    animation_frames: int = 10


def check_features(features, settings, table=None, model=None, modes=None):
    """Refuse unusable inputs with a readable message (:class:`EngineInputError`)."""
    if features.ndim != 2 or len(features) < 2:
        raise EngineInputError("expected flexibility coordinates as an array (particles, coordinates) of at least "
                               "two particles, got %s" % (features.shape,))
    if not np.all(np.isfinite(features)):
        raise EngineInputError("the flexibility coordinates contain NaN or infinite values")
    if settings.method not in ("pca", "umap"):
        raise EngineInputError("unknown reduction %r (pca or umap)" % settings.method)
    if settings.dims < 1:
        raise EngineInputError("the landscape needs at least one dimension")
    if settings.grouping not in GROUPINGS:
        raise EngineInputError("unknown grouping %r (%s)" % (settings.grouping, ", ".join(GROUPINGS)))
    if settings.grouping in ("kmeans", "gmm") and not 1 <= settings.k <= len(features):
        raise EngineInputError("%d groups asked for but there are %d particles" % (settings.k, len(features)))
    if settings.grouping == "ranges":
        if not settings.ranges:
            raise EngineInputError("grouping by ranges needs ranges (e.g. 1:-900:-100)")
        try:
            for r in settings.ranges:
                parse_ranges(r)
        except ValueError as exc:
            raise EngineInputError(str(exc)) from None
    if not 0 < settings.core_fraction <= 1:
        raise EngineInputError("the core fraction must be in (0, 1], got %g" % settings.core_fraction)
    if table is not None:
        if len(table) != len(features):
            raise EngineInputError("the particles are %d but the coordinates have %d rows"
                                   % (len(table), len(features)))
        if not table.has_pose:
            raise EngineInputError("the particles have no poses: group reconstructions need them")
    if (model is None) != (modes is None):
        raise EngineInputError("a reference model and its modes go together")
    if model is not None and (modes.ndim != 3 or modes.shape[1] != len(model) or modes.shape[0] != features.shape[1]):
        raise EngineInputError("modes %s do not match the reference (%d atoms) and the coordinates (%d columns)"
                               % (modes.shape, len(model), features.shape[1]))


def reduce_features(features, settings):
    """``(reduced (N, d), projector or None)``; UMAP has no linear projector."""
    if settings.method == "pca":
        projector = fit_pca(features, settings.dims, settings.standardise)
        return projector.transform(features), projector
    try:
        return fit_umap(features, settings.dims, settings.seed)
    except ImportError as exc:
        raise EngineInputError(str(exc)) from None


def make_groups(reduced, settings):
    """Group index per particle (0-based, -1: in no group)."""
    g = settings.grouping
    if g == "none":
        return np.full(len(reduced), -1, dtype=np.int64)
    try:
        if g == "kmeans":
            labels = kmeans_groups(reduced, settings.k, settings.seed)
        elif g == "gmm":
            labels = gmm_groups(reduced, settings.k, settings.seed)
        elif g == "ranges":
            labels = range_groups(reduced, [parse_ranges(r) for r in settings.ranges])
        else:
            labels = quantile_groups(reduced, settings.min_size, settings.k)
    except ValueError as exc:
        raise EngineInputError(str(exc)) from None
    return keep_core(reduced, labels, settings.core_fraction)


def _reconstruct_group(table, members, folder, settings, device):
    result = reconstruct_table(table, members, settings.size, settings.ctf_mode, settings.pad, device=device,
                               batch_size=settings.batch_size, data_root=settings.data_root)
    facts = write_reconstruction(folder, result)
    return facts["resolution_0.143_A"], facts["resolution_0.5_A"]


def _write_animations(out, model, modes, projector, n_axes, frames):
    os.makedirs(os.path.join(out, outputs.ANIMATIONS), exist_ok=True)
    base = deform(model.coords, modes, projector.mean[None])[0]  # the mean conformation
    centre = AtomModel(base, model.elements, model.names, model.resnames, model.resids, model.chains,
                       model.bfactors, model.weights)
    for axis in range(n_axes):
        sd = float(np.sqrt(projector.explained[axis]))
        direction = projector.components[axis] * projector.scale  # feature change per unit along the axis
        vector = np.einsum("m,mai->ai", direction, modes)
        write_animation(os.path.join(out, outputs.animation(axis + 1)), centre, vector, 2 * sd, frames)


def _write_tables(out, reduced, labels, projector, rows, n_features):
    save = {"reduced": reduced, "groups": labels}
    if projector is not None:
        projector.save(os.path.join(out, outputs.PROJECTOR))
        save.update(components=projector.components, mean=projector.mean, explained=projector.explained)
    np.savez(os.path.join(out, outputs.LANDSCAPE), **save)
    header = ["group", "size"] + ["centre_%d" % (i + 1) for i in range(reduced.shape[1])] + \
        ["mean_%d" % (i + 1) for i in range(n_features)] + ["resolution_0.143_A", "resolution_0.5_A"]
    table_rows = [[r["group"], r["size"]] + list(r["centre"]) + list(r["mean_features"]) +
                  [r.get("resolution_0.143_A", np.nan), r.get("resolution_0.5_A", np.nan)] for r in rows]
    np.savetxt(os.path.join(out, outputs.GROUPS), np.array(table_rows, dtype=float).reshape(-1, len(header)),
               delimiter=",", header=",".join(header), comments="", fmt="%.6g")


def run_landscape(features, settings, out, table=None, model=None, modes=None, device=None):
    """Landscape of ``features (N, M)`` into the folder ``out``; returns the summary dict.

    ``table``: a :class:`..core.io.particles.ParticleTable` of the same particles in the same order
    (group reconstructions); ``model`` and ``modes (M, atoms, 3)``: the reference and the modes the
    features are amplitudes of (centroids and animations).
    """
    features = np.asarray(features, dtype=np.float64)
    check_features(features, settings, table, model, modes)
    progress = Progress(1, "landscape", unit="steps")
    os.makedirs(out, exist_ok=True)
    reduced, projector = reduce_features(features, settings)
    labels = make_groups(reduced, settings)
    groups = [int(g) for g in np.unique(labels[labels >= 0])]
    log("%s of %d particles to %d dimensions; %d groups (%s), %d particles in none"
        % (settings.method.upper(), len(features), reduced.shape[1], len(groups), settings.grouping,
           (labels < 0).sum()))
    rows = []
    for g in groups:
        members = np.nonzero(labels == g)[0]
        row = {"group": g + 1, "size": len(members), "centre": reduced[members].mean(0),
               "mean_features": features[members].mean(0)}
        folder = os.path.join(out, outputs.group_folder(g + 1))
        os.makedirs(folder, exist_ok=True)
        if model is not None:
            coords = deform(model.coords, modes, row["mean_features"][None])[0]
            with open(os.path.join(folder, outputs.GROUP_CENTROID), "w") as fh:
                fh.write("\n".join(pdb_lines(model, coords)) + "\nEND\n")
        if table is not None and len(members) >= 2:
            row["resolution_0.143_A"], row["resolution_0.5_A"] = _reconstruct_group(table, members, folder,
                                                                                   settings, device)
            log("group %d: %d particles, half-map FSC %.2f A (0.143)" % (g + 1, len(members),
                                                                        row["resolution_0.143_A"]))
        rows.append(row)
    if model is not None and projector is not None:
        _write_animations(out, model, modes, projector, reduced.shape[1], settings.animation_frames)
    _write_tables(out, reduced, labels, projector, rows, features.shape[1])
    progress.update(1)
    return {"command": "landscape", "n_particles": len(features), "method": settings.method,
            "dims": int(reduced.shape[1]), "grouping": settings.grouping, "n_groups": len(groups),
            "group_sizes": [r["size"] for r in rows], "ungrouped": int((labels < 0).sum()),
            "explained_variance": None if projector is None else projector.explained,
            "resolutions_0.143_A": [r.get("resolution_0.143_A") for r in rows],
            "resolutions_0.5_A": [r.get("resolution_0.5_A") for r in rows],
            "device": None if device is None else device_name(device), "seconds": progress.elapsed(),
            "files": outputs.FILES}
