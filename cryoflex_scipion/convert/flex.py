"""Particles with flexibility results (pwem FlexHub) from engine outputs.

Normal-mode results follow Flexutils' conventions for SetOfParticlesFlex: progName "NMA",
``zFlex`` = the amplitudes of the modes listed in the FlexInfo, plus ContinuousFlex's
``_xmipp_nmaDisplacements`` and ``_xmipp_cost`` so that its tools can read them.
"""
import numpy as np
from pwem.constants import ALIGN_PROJ
from pwem.objects import ParticleFlex, Transform
from pyworkflow.object import CsvList, Float

from ..constants import FLEX_NMA
from .particles import matrices_from_pose

__all__ = ["fill_flex_particles", "set_nma_flex_info"]


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
        item._cryoflexCost = Float(float(cost[i]))
        item._xmipp_cost = Float(float(cost[i]))
        displacements = CsvList(pType=float)
        displacements.set([float(v) for v in amplitudes[i]])
        item._xmipp_nmaDisplacements = displacements
        if mahalanobis is not None:
            item._cryoflexMahalanobis = Float(float(mahalanobis[i]))
        flex_set.append(item)
    return flex_set
