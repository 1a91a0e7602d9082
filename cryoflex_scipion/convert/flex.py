"""Particles with flexibility results (pwem FlexHub) from engine outputs.

Normal-mode results follow Flexutils' conventions for SetOfParticlesFlex: progName "NMA",
``zFlex`` = the amplitudes of the modes listed in the FlexInfo, plus ContinuousFlex's
``_xmipp_nmaDisplacements`` and ``_xmipp_cost`` so that its tools can read them.
"""
import numpy as np
from pwem.constants import ALIGN_PROJ
from pwem.objects import ParticleFlex, Transform
from pyworkflow.object import CsvList, Float

from ..constants import FLEX_NMA, GT_AMPLITUDES, GT_ANGLES, GT_ORIGIN
from .particles import matrices_from_pose, pose_from_matrices

__all__ = ["fill_flex_particles", "set_nma_flex_info", "nma_labels_to_npz", "has_ground_truth"]


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


def fill_flex_particles(flex_set, input_set, euler, origin_A, amplitudes, cost, mahalanobis=None, keep=None,
                        progName=FLEX_NMA):
    """Append a ParticleFlex per input particle (id order, ids kept) with the new alignment,
    zFlex = amplitudes and the cost; ``keep`` (bool per particle) selects a subset."""
    apix = input_set.getSamplingRate()
    flex_set.copyInfo(input_set)
    flex_set.setHasCTF(input_set.hasCTF())  # copyInfo between different set classes leaves it out
    flex_set.setAlignment(ALIGN_PROJ)
    matrices = matrices_from_pose(euler, np.asarray(origin_A) / apix)
    for i, particle in enumerate(input_set.iterItems(orderBy="id")):
        if keep is not None and not keep[i]:
            continue
        item = ParticleFlex(progName=progName)
        item.copyInfo(particle)
        item.setObjId(particle.getObjId())
        item.setTransform(Transform(matrices[i]))
        item.setZFlex([float(v) for v in amplitudes[i]])
        if cost is not None:
            item._cryoflexCost = Float(float(cost[i]))
            item._xmipp_cost = Float(float(cost[i]))
        displacements = CsvList(pType=float)
        displacements.set([float(v) for v in amplitudes[i]])
        item._xmipp_nmaDisplacements = displacements
        if mahalanobis is not None:
            item._cryoflexMahalanobis = Float(float(mahalanobis[i]))
        flex_set.append(item)
    return flex_set
