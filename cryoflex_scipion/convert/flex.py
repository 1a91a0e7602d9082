"""Particles with flexibility results (pwem FlexHub's SetOfParticlesFlex) from engine outputs, and back.

Any method's per-particle coordinates travel as ``zFlex`` (one vector of ``d`` values per particle), its
FlexInfo says what they are (``progName``, :mod:`..constants`) and what decodes them:

* latent methods (3DFlex, cryoSPHERE): ``modelPath`` (the trained model file the latents belong to) and
  ``latDim`` (``d``), Flexutils' names -- :func:`set_latent_flex_info`, :func:`fill_latent_particles`;
* normal modes follow Flexutils' conventions for progName "NMA": ``zFlex`` = the amplitudes of the modes
  listed in the FlexInfo (``modeNumbers``, ``modesFile``, ``refStruct``, ...), plus ContinuousFlex's
  ``_xmipp_nmaDisplacements`` and ``_xmipp_cost`` so that its tools can read them --
  :func:`set_nma_flex_info`, :func:`fill_flex_particles`.

:func:`read_latents` gives the ``(N, d)`` array back (id order) whatever the method.
"""
import os

import numpy as np
from pwem.constants import ALIGN_PROJ
from pwem.objects import FlexInfo, ParticleFlex, Transform
from pyworkflow.object import Boolean, CsvList, Float, Integer, String

from ..constants import FLEX_LATENT_DIM, FLEX_MODEL_PATH, FLEX_NMA, GT_AMPLITUDES, GT_ANGLES, GT_ORIGIN
from .particles import matrices_from_pose, pose_from_matrices

__all__ = ["fill_latent_particles", "set_latent_flex_info", "read_latents", "latent_flex_info",
           "fill_flex_particles", "set_nma_flex_info", "nma_labels_to_npz", "has_ground_truth"]


def has_ground_truth(parts):
    """Whether the first particle carries simulated ground truth with amplitudes."""
    first = parts.getFirstItem() if parts.getSize() else None
    return first is not None and all(hasattr(first, a) for a in (GT_AMPLITUDES, GT_ANGLES, GT_ORIGIN))


def nma_labels_to_npz(parts, path, ground_truth=False, mode_numbers=None):
    """Per-particle labels (id order) for DeepHEMNMA into an .npz: ``euler`` (ZYZ, deg), ``origin_A``,
    ``amplitudes`` and ``mode_numbers``.

    From a SetOfParticlesFlex of normal modes (HEMNMA's output): its alignment and zFlex, mode numbers
    from its FlexInfo.  With ``ground_truth``: the simulation's ground truth carried by each particle,
    ``mode_numbers`` given by the caller.  Raises ValueError when labels are missing.
    """
    apix = float(parts.getSamplingRate())
    euler, origin, amps, matrices = [], [], [], []
    for p in parts.iterItems(orderBy="id"):
        if ground_truth:
            euler.append(list(getattr(p, GT_ANGLES)))
            origin.append(list(getattr(p, GT_ORIGIN)))
            amps.append(list(getattr(p, GT_AMPLITUDES)))
        else:
            z = p.getZFlex() if hasattr(p, "getZFlex") else None
            if z is None or len(z) == 0 or not p.hasTransform():
                raise ValueError("particle %d has no normal-mode amplitudes (zFlex) or no alignment: train on "
                                 "the output of an elastic alignment" % p.getObjId())
            matrices.append(p.getTransform().getMatrix().copy())  # the set reuses one item object
            amps.append(list(z))
    if not amps:
        raise ValueError("the particle set is empty")
    if not ground_truth:
        euler, origin_px = pose_from_matrices(np.stack(matrices))  # one conversion for the whole set
        origin = origin_px * apix
        info = parts.getFlexInfo()
        numbers = info.getAttr("modeNumbers")
        mode_numbers = [int(v) for v in str(numbers).split(",")] if numbers is not None else None
    amplitudes = np.asarray(amps, dtype=np.float64)
    if mode_numbers is None or len(mode_numbers) != amplitudes.shape[1]:
        raise ValueError("the particles carry %d amplitudes but %s mode numbers are known (%s)"
                         % (amplitudes.shape[1], "no" if mode_numbers is None else len(mode_numbers), mode_numbers))
    np.savez(path, euler=np.asarray(euler, np.float64), origin_A=np.asarray(origin, np.float64),
             amplitudes=amplitudes, mode_numbers=np.asarray(mode_numbers, np.int64))
    return mode_numbers


def set_nma_flex_info(flex_set, mode_numbers, modes_file, reference_file, n_atoms):
    info = flex_set.getFlexInfo()
    info.setProgName(FLEX_NMA)
    info.setAttr("modeNumbers", [int(m) for m in mode_numbers])
    info.setAttr("n_modes", len(mode_numbers))
    info.setAttr("modesFile", modes_file)
    info.setAttr("refStruct", reference_file)
    info.setAttr("atomSubset", "all")
    info.setAttr("nAtoms", int(n_atoms))


def set_latent_flex_info(flex_set, prog_name, model_file, latent_dim, **attributes):
    """FlexInfo of a latent method: ``progName``, ``modelPath`` (absolute path of the trained model the
    latents belong to; None when the method has none), ``latDim`` and any further attributes
    (numbers, text, lists: stored with ``FlexInfo.setAttr``)."""
    info = flex_set.getFlexInfo()
    info.setProgName(prog_name)
    if model_file is not None:
        info.setAttr(FLEX_MODEL_PATH, os.path.abspath(str(model_file)))
    info.setAttr(FLEX_LATENT_DIM, int(latent_dim))
    for name, value in attributes.items():
        info.setAttr(name, value.tolist() if isinstance(value, np.ndarray) else value)
    return info


def latent_flex_info(parts):
    """``{"progName", "modelPath", "latDim"}`` of a SetOfParticlesFlex (None for what it does not record)."""
    info = parts.getFlexInfo()
    values = {"progName": info.getProgName()}
    for name in (FLEX_MODEL_PATH, FLEX_LATENT_DIM):
        attr = getattr(info, name, None)
        values[name] = attr.get() if attr is not None else None
    return values


def read_latents(parts, with_ids=False):
    """The particles' flexibility coordinates (zFlex) as a float64 ``(N, d)`` array in id order (and
    their ids with ``with_ids``).  Raises ValueError when a particle has none or their lengths differ."""
    rows, ids = [], []
    for p in parts.iterItems(orderBy="id"):
        z = p.getZFlex() if hasattr(p, "getZFlex") else None
        if z is None or len(z) == 0:
            raise ValueError("particle %d has no flexibility coordinates (zFlex)" % p.getObjId())
        if rows and len(z) != len(rows[0]):
            raise ValueError("particle %d has %d flexibility coordinates but particle %d has %d"
                             % (p.getObjId(), len(z), ids[0], len(rows[0])))
        rows.append(np.asarray(z, dtype=np.float64))
        ids.append(p.getObjId())
    if not rows:
        raise ValueError("the particle set is empty")
    latents = np.stack(rows)
    return (latents, np.asarray(ids, dtype=np.int64)) if with_ids else latents


def _scipion_value(value):
    """A pyworkflow object for one particle's value of an extra attribute."""
    if np.ndim(value) == 1:
        csv = CsvList(pType=float)
        csv.set([float(v) for v in value])
        return csv
    if isinstance(value, (bool, np.bool_)):
        return Boolean(bool(value))
    if isinstance(value, (int, np.integer)):
        return Integer(int(value))
    if isinstance(value, (float, np.floating)):
        return Float(float(value))
    return String(str(value))


def fill_latent_particles(flex_set, input_set, latents, prog_name, euler=None, origin_A=None, attributes=None,
                          keep=None):
    """Append a ParticleFlex per input particle (id order, ids kept) with ``zFlex`` = ``latents[i]``.

    ``latents``: ``(N, d)``, one row per input particle in id order (an engine result).  ``euler`` (ZYZ,
    deg) and ``origin_A`` (RELION origin, A), both or neither: a new projection alignment; otherwise the
    particles keep theirs.  ``attributes``: ``{name: values}`` with one value (number, text) or one row
    (a CsvList) per particle, set on each item in that order (names start with '_').  ``keep`` (bool per
    particle) selects a subset.  The set's FlexInfo is reset to ``prog_name``; add the method's with
    :func:`set_latent_flex_info` (or :func:`set_nma_flex_info`).  Returns ``flex_set``.
    """
    latents = np.asarray(latents, dtype=np.float64)
    n = input_set.getSize()
    if latents.ndim != 2 or latents.shape[0] != n or latents.shape[1] == 0:
        raise ValueError("latents of shape %s for %d particles: one row of d values per particle is needed"
                         % (latents.shape, n))
    if not np.isfinite(latents).all():
        raise ValueError("the latents contain NaN or infinite values")
    attributes = dict(attributes or {})
    for name, values in attributes.items():
        if not name.startswith("_"):
            raise ValueError("attribute %r: Scipion attributes start with '_'" % name)
        if len(values) != n:
            raise ValueError("attribute %s has %d values for %d particles" % (name, len(values), n))
    if (euler is None) != (origin_A is None):
        raise ValueError("a new alignment needs both euler and origin_A")
    apix = input_set.getSamplingRate()
    flex_set.copyInfo(input_set)
    flex_set.setHasCTF(input_set.hasCTF())  # copyInfo between different set classes leaves it out
    flex_set.setFlexInfo(FlexInfo(prog_name))  # not an input set's FlexInfo (another method's)
    matrices = None
    if euler is not None:
        flex_set.setAlignment(ALIGN_PROJ)
        matrices = matrices_from_pose(euler, np.asarray(origin_A) / apix)
    for i, particle in enumerate(input_set.iterItems(orderBy="id")):
        if keep is not None and not keep[i]:
            continue
        item = ParticleFlex(progName=prog_name)
        item.copyInfo(particle)
        item.setObjId(particle.getObjId())
        item.setFlexInfo(FlexInfo(prog_name))
        if matrices is not None:
            item.setTransform(Transform(matrices[i]))
        item.setZFlex([float(v) for v in latents[i]])
        item.setZRed([])
        for name, values in attributes.items():
            setattr(item, name, _scipion_value(values[i]))
        flex_set.append(item)
    return flex_set


def fill_flex_particles(flex_set, input_set, euler, origin_A, amplitudes, cost, mahalanobis=None, keep=None,
                        progName=FLEX_NMA, fit_quality=None, reference=None):
    """Normal-mode results: :func:`fill_latent_particles` with the new alignment, zFlex = amplitudes, the
    cost (``_cryoflexCost``, ContinuousFlex's ``_xmipp_cost``), ContinuousFlex's ``_xmipp_nmaDisplacements``,
    the Mahalanobis distance, the fit quality (``_cryoflexFitQuality``) and the index of the conformation
    that fitted best (``_cryoflexReference``, 0 = the modes' reference); ``keep`` (bool per particle)
    selects a subset."""
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    attributes = {}
    if cost is not None:
        attributes["_cryoflexCost"] = np.asarray(cost, dtype=np.float64)
        attributes["_xmipp_cost"] = np.asarray(cost, dtype=np.float64)
    attributes["_xmipp_nmaDisplacements"] = amplitudes
    if mahalanobis is not None:
        attributes["_cryoflexMahalanobis"] = np.asarray(mahalanobis, dtype=np.float64)
    if fit_quality is not None:
        attributes["_cryoflexFitQuality"] = np.asarray(fit_quality, dtype=np.float64)
    if reference is not None:
        attributes["_cryoflexReference"] = np.asarray(reference, dtype=np.int64)
    return fill_latent_particles(flex_set, input_set, amplitudes, progName, euler=euler, origin_A=origin_A,
                                 attributes=attributes, keep=keep)
