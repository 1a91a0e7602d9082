"""SetOfParticles <-> engine particle tables (RELION 3.1 STAR + stacks).

Alignment: a Scipion ``ALIGN_PROJ`` transform is the matrix
``T = [A^T | A^T s]`` where ``A`` is the Euler matrix of
:mod:`cryoflex_scipion.engine.core.geometry` and ``s`` the RELION origin in
pixels (the formulas of Scipion's RELION and Xmipp plugins; checked against
them in the tests).  CTF: defocus U/V/angle and phase shift come from each
particle's CTFModel, voltage/Cs/amplitude contrast from the acquisition.
Other ``_rln*`` attributes (optics group, random subset, ...) travel as STAR
columns and come back as attributes.

Optics groups: Scipion keeps one acquisition per set, so per-group values
(voltage, Cs, amplitude contrast, and any other optics column such as beam
tilt) live where Scipion's RELION plugin puts them: the RELION 3.1 optics
table as STAR text in the acquisition's ``opticsGroupInfo``, with each
particle's group in ``_rlnOpticsGroup``.  Both directions use it, so a
multi-group RELION set keeps every group's values through Scipion.  Items
keep the set's acquisition: pwem's ``SetOfImages.iterItems`` loads an item's
acquisition into the set's own object, so per-item values would overwrite
the set's while iterating.
"""
import os

import numpy as np
from pwem.constants import ALIGN_PROJ
from pwem.objects import Acquisition, CTFModel, Particle, Transform
from pyworkflow.object import Float, Integer, String

from ..engine.core.ctf import CTFParams
from ..engine.core.geometry import euler_to_matrix, matrix_to_euler
from ..engine.core.io.particles import ParticleTable
from ..engine.core.io.star import StarError, format_star, parse_star

__all__ = ["pose_from_matrices", "matrices_from_pose", "particles_to_table", "write_particles_star",
           "fill_particles", "particle_ids", "optics_of_set"]

_NOT_EXTRA = {"_rlnImageName", "_rlnOpticsGroup"}


def pose_from_matrices(matrices):
    """Scipion ALIGN_PROJ matrices ``(N, 4, 4)`` -> (euler deg (N, 3), origin px (N, 2))."""
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 4, 4)
    a = np.transpose(m[:, :3, :3], (0, 2, 1))
    origin = np.einsum("nij,nj->ni", a, m[:, :3, 3])
    return matrix_to_euler(a), origin[:, :2]


def matrices_from_pose(euler, origin_px):
    """(euler deg (N, 3), origin px (N, 2)) -> Scipion ALIGN_PROJ matrices ``(N, 4, 4)``."""
    a = euler_to_matrix(np.asarray(euler, dtype=np.float64).reshape(-1, 3))
    s = np.zeros((len(a), 3))
    s[:, :2] = np.asarray(origin_px, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((len(a), 4, 4))
    out[:, :3, :3] = np.transpose(a, (0, 2, 1))
    out[:, :3, 3] = np.einsum("nji,nj->ni", a, s)  # A^T s
    out[:, 3, 3] = 1.0
    return out


def particle_ids(parts):
    return np.array([p.getObjId() for p in parts.iterItems(orderBy="id")], dtype=np.int64)


def _extra_value(obj):
    value = obj.get()
    return "" if value is None else value


def optics_of_set(parts):
    """The optics block kept in the set's acquisition (``opticsGroupInfo``, RELION 3.1 STAR text), or None."""
    info = getattr(parts.getAcquisition(), "opticsGroupInfo", None)
    text = info.get() if info is not None else None
    if not text or not text.strip():
        return None
    try:
        blocks = parse_star(text, "the optics groups of %s" % parts.getFileName())
    except StarError as exc:
        raise ValueError("cannot read the optics groups stored with the particles: %s" % exc) from None
    block = blocks.get("optics") or next((b for b in blocks.values() if b.loop and "rlnOpticsGroup" in b), None)
    return block if block is not None and "rlnOpticsGroup" in block else None


def _set_microscope(parts):
    """The set's own voltage, Cs and amplitude contrast, read before its items are iterated: iterating can
    load an item's acquisition into the set's acquisition object (pwem's SetOfImages.iterItems shares it)."""
    acq = parts.getAcquisition()
    return {"rlnVoltage": acq.getVoltage(), "rlnSphericalAberration": acq.getSphericalAberration(),
            "rlnAmplitudeContrast": acq.getAmplitudeContrast()}


def _microscope_values(fallback, optics, groups):
    """Per-particle voltage, Cs and amplitude contrast: from the optics block where it has the column, else
    the set's values (``fallback``).  A group absent from the block, or a value missing everywhere, raises."""
    out = {}
    for column, value in fallback.items():
        if optics is not None and column in optics:
            lookup = dict(zip(optics.ints("rlnOpticsGroup").tolist(), optics.floats(column).tolist()))
            missing = sorted(set(np.unique(groups).tolist()) - set(lookup))
            if missing:
                raise ValueError("particles of optics group(s) %s have no row in the set's optics table"
                                 % ", ".join(map(str, missing)))
            out[column] = np.array([lookup[g] for g in groups.tolist()], dtype=np.float64)
        elif value is None:
            raise ValueError("the particles' acquisition has no %s" % column[3:])
        else:
            out[column] = np.full(len(groups), float(value))
    return out


def particles_to_table(parts, use_alignment=True, use_ctf=True, check_files=True):
    """Engine :class:`ParticleTable` of a SetOfParticles (items in id order).

    Image paths become absolute.  With ``check_files`` a missing stack raises
    FileNotFoundError naming it.
    """
    n = parts.getSize()
    if n == 0:
        raise ValueError("the particle set is empty")
    apix = float(parts.getSamplingRate())
    box = int(parts.getXDim())
    with_pose = use_alignment and parts.hasAlignmentProj()
    with_ctf = use_ctf and parts.hasCTF()
    set_microscope, optics_block = _set_microscope(parts), optics_of_set(parts)   # before iterating items

    files = np.empty(n, dtype=object)
    index = np.zeros(n, dtype=np.int64)
    ids = np.zeros(n, dtype=np.int64)
    matrices = np.zeros((n, 4, 4)) if with_pose else None
    ctf = np.zeros((n, 4)) if with_ctf else None   # defocus U, V, angle, phase shift
    optics = np.ones(n, dtype=np.int64)
    extras = {}
    for i, p in enumerate(parts.iterItems(orderBy="id")):
        idx, fn = p.getLocation()
        files[i] = fn
        index[i] = idx - 1 if idx else 0
        ids[i] = p.getObjId()
        if with_pose:
            matrices[i] = p.getTransform().getMatrix()
        if with_ctf:
            c = p.getCTF()
            ctf[i] = (c.getDefocusU(), c.getDefocusV(), c.getDefocusAngle(), c.getPhaseShift() or 0.0)
        for name, attr in p.getAttributes():
            if name.startswith("_rln") and name not in _NOT_EXTRA:
                extras.setdefault(name[1:], np.empty(n, dtype=object))[i] = _extra_value(attr)
        group = getattr(p, "_rlnOpticsGroup", None)
        if group is not None and group.get() is not None:
            optics[i] = int(group.get())

    unique = {f: os.path.abspath(f) for f in set(files)}
    if check_files:
        for f, path in unique.items():
            if not os.path.exists(path):
                raise FileNotFoundError("particle stack not found: %s" % path)
    files = np.array([unique[f] for f in files])
    euler = origin_A = None
    if with_pose:
        euler, origin_px = pose_from_matrices(matrices)
        origin_A = origin_px * apix
    params = None
    if with_ctf:
        micro = _microscope_values(set_microscope, optics_block, optics)
        params = CTFParams(defocus_u=ctf[:, 0], defocus_v=ctf[:, 1], defocus_angle=ctf[:, 2],
                           voltage=micro["rlnVoltage"], cs=micro["rlnSphericalAberration"],
                           amplitude_contrast=micro["rlnAmplitudeContrast"], phase_shift=ctf[:, 3])
    extra = {k: np.array(["" if v is None else v for v in vals]) for k, vals in extras.items()}
    extra["cryoflexId"] = ids
    # The stored optics block travels on (group names, beam tilt, ...); pixel size and box are rewritten
    # from the set when the table is written, as Scipion's RELION plugin does.
    return ParticleTable(files, index, np.full(n, apix), np.full(n, box), euler, origin_A, params, optics,
                         optics_block, extra, None, "particles")


def write_particles_star(parts, path, **kwargs):
    """Write a SetOfParticles as a RELION 3.1 STAR file; returns the table."""
    table = particles_to_table(parts, **kwargs)
    table.to_star(path)
    return table


def _typed(value):
    try:
        f = float(value)
    except (TypeError, ValueError):
        return String(str(value))
    if np.isfinite(f) and f == int(f) and "." not in str(value) and "e" not in str(value).lower():
        return Integer(int(f))
    return Float(f)


def _per_particle(values, n):
    return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))


def fill_particles(out_set, table, acquisition=None, ids=None, item_callback=None):
    """Append the particles of an engine table to ``out_set`` (a new SetOfParticles).

    Sampling rate, alignment (ALIGN_PROJ when the table has poses) and CTF
    flags are set on the set; ``acquisition`` (a pwem Acquisition; by default
    the first particle's microscope values) is copied to the set and the items,
    with the table's optics groups (see the module docstring).
    ``item_callback(particle, i)`` may add attributes.
    """
    n = len(table)
    box, apix = table.uniform()
    out_set.setSamplingRate(apix)
    ctf = table.ctf
    if acquisition is None and ctf is not None:
        acquisition = Acquisition(voltage=float(_per_particle(ctf.voltage, n)[0]),
                                  sphericalAberration=float(_per_particle(ctf.cs, n)[0]),
                                  amplitudeContrast=float(_per_particle(ctf.amplitude_contrast, n)[0]))
    if acquisition is not None:
        acquisition = acquisition.clone()
        if ctf is not None:
            acquisition.opticsGroupInfo.set(format_star([table.optics_table()]))
        out_set.setAcquisition(acquisition)
    if table.has_pose:
        out_set.setAlignment(ALIGN_PROJ)
        matrices = matrices_from_pose(table.euler, table.origin_A / table.apix[:, None])
    out_set.setHasCTF(table.has_ctf)
    if ctf is not None:
        dfu, dfv, ang, phase = (np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for v in
                                (ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle, ctf.phase_shift))
    extra_cols = [c for c in table.extra if c.startswith("rln")]
    files = [os.path.abspath(f) if table.base_dir is None else
             os.path.join(table.base_dir, f) if not os.path.isabs(f) else f for f in table.image_file]
    item = Particle()
    for i in range(n):
        item.cleanObjId()
        if ids is not None:
            item.setObjId(int(ids[i]))
        item.setLocation(int(table.image_index[i]) + 1, files[i])
        if acquisition is not None:
            item.setAcquisition(acquisition)
        if table.has_pose:
            item.setTransform(Transform(matrices[i]))
        if ctf is not None:
            model = CTFModel(defocusU=float(dfu[i]), defocusV=float(dfv[i]), defocusAngle=float(ang[i]),
                             phaseShift=float(phase[i]))
            item.setCTF(model)
        for c in extra_cols:
            setattr(item, "_" + c, _typed(table.extra[c][i]))
        if table.optics_group is not None:
            item._rlnOpticsGroup = Integer(int(table.optics_group[i]))
        if item_callback is not None:
            item_callback(item, i)
        out_set.append(item)
    return out_set
