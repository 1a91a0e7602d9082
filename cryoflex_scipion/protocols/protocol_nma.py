"""Normal mode analysis of atomic structures (ANM/RTB), and pseudoatomic models of maps."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import AtomStruct, SetOfNormalModes

from ..convert import fill_normal_modes, light_atoms, volume_file, volume_from_mrc, volume_to_mrc
from ..engine.nma import outputs as OUT
from .base import CryoFlexProtocol

SELECTIONS = ["C-alpha", "backbone", "all heavy atoms", "custom"]
PRODY_SELECTIONS = ["name CA", "backbone", "not hydrogen", None]
MODEL_ANM, MODEL_RTB = 0, 1
CUTOFF_ABS, CUTOFF_REL = 0, 1

# Engine input this module writes (outputs are named in engine/nma/outputs.py).
PSEUDO_INPUT_MAP = "input.mrc"


class ProtCryoFlexNMA(CryoFlexProtocol):
    """Normal modes of an atomic structure or a pseudoatomic model with an elastic network (ANM, or RTB
    with rigid blocks of residues), from ProDy-compatible sparse Hessians. Outputs a SetOfNormalModes in
    the ContinuousFlex/ProDy layout (readable by prody.parseScipionModes), an NMD file for NMWiz, mode
    animations and the modes as an array for the engines.
    """
    _label = "normal mode analysis"
    _engineCommand = "nma"
    _possibleOutputs = {"outputModes": SetOfNormalModes, "outputStructure": AtomStruct}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct",
                      label="Atomic structure", help="PDB/mmCIF model, or pseudoatoms of a map.")
        form.addParam("atomSelection", params.EnumParam, default=0, choices=SELECTIONS,
                      label="Atoms", help="Atoms of the elastic network (pseudoatomic models always use all).")
        form.addParam("customSelection", params.StringParam, default="name CA and chain A",
                      condition="atomSelection == 3", label="ProDy selection")
        form.addSection(label="Elastic network")
        form.addParam("networkModel", params.EnumParam, default=MODEL_ANM, choices=["ANM", "RTB"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Model",
                      help="ANM: every atom moves. RTB: blocks of consecutive residues move rigidly "
                           "(Tama et al. 2000), for large structures.")
        form.addParam("blockSize", params.IntParam, default=10, validators=[params.GE(1)],
                      condition="networkModel == %d" % MODEL_RTB, label="Residues per block")
        form.addParam("cutoffMode", params.EnumParam, default=CUTOFF_ABS, choices=["absolute", "relative"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Cutoff")
        form.addParam("cutoff", params.FloatParam, default=15.0,
                      condition="cutoffMode == %d" % CUTOFF_ABS,
                      validators=[params.GT(0)], label="Cutoff distance (A)",
                      help="15 A for C-alpha networks; 8-10 A is usual for all heavy atoms.")
        form.addParam("cutoffPercentile", params.FloatParam, default=95.0,
                      condition="cutoffMode == %d" % CUTOFF_REL,
                      validators=[params.Range(1, 100)], label="Percentile (%)",
                      help="Cutoff = this percentile of the distances from each atom to its 3 nearest neighbours "
                           "(ContinuousFlex's relative cutoff).")
        form.addParam("gamma", params.FloatParam, default=1.0, validators=[params.GT(0)], label="Spring constant")
        form.addParam("numberOfModes", params.IntParam, default=20, validators=[params.GE(7)],
                      label="Number of modes", help="Including the 6 rigid-body modes (kept in the set, disabled).")
        form.addParam("collectivityThreshold", params.FloatParam, default=0.15, validators=[params.Range(0, 1)],
                      label="Collectivity threshold", help="Modes less collective than this are disabled.")
        form.addParam("animationRmsd", params.FloatParam, default=2.0,
                      validators=[params.GE(0)], expertLevel=params.LEVEL_ADVANCED,
                      label="Animation RMSD (A)", help="RMS displacement at the ends of the mode animations.")

    def _insertAllSteps(self):
        self._insertFormSteps(self.nmaStep, self.createOutputStep)

    def _selection(self):
        struct = self.inputStructure.get()
        if struct.getPseudoAtoms():
            return "all"
        idx = self.atomSelection.get()
        return PRODY_SELECTIONS[idx] or self.customSelection.get()

    def nmaStep(self, *formValues):
        args = ["--atoms", os.path.abspath(self.inputStructure.get().getFileName()), "--selection", self._selection(),
                "-o", self._enginePath(), "--model", "RTB" if self.networkModel.get() == MODEL_RTB else "ANM",
                "--block-size", self.blockSize.get(), "--gamma", self.gamma.get(), "-n", self.numberOfModes.get(),
                "--collectivity-threshold", self.collectivityThreshold.get(),
                "--animation-rmsd", self.animationRmsd.get()]
        if self.cutoffMode.get() == CUTOFF_REL:
            args += ["--cutoff-percentile", self.cutoffPercentile.get()]
        else:
            args += ["--cutoff", self.cutoff.get()]
        self.runEngine(args)  # no GPU parameters: NMA is sparse linear algebra on the CPU

    def createOutputStep(self, *formValues):
        table = np.genfromtxt(self._enginePath(OUT.MODES_TABLE), delimiter=",", names=True)
        vectors = np.load(self._enginePath(OUT.MODES))
        structure = AtomStruct(filename=self._enginePath(OUT.ATOMS),
                               pseudoatoms=bool(self.inputStructure.get().getPseudoAtoms()))
        modes = self._createSetOfNormalModes()
        fill_normal_modes(modes, vectors, table["eigenvalue"], table["collectivity"], table["score"],
                          table["enabled"] > 0, self._getPath("modes"))
        self._defineOutputs(outputStructure=structure)
        modes.setPdb(structure)
        self._defineOutputs(outputModes=modes)
        self._defineSourceRelation(self.inputStructure, structure)
        self._defineSourceRelation(self.inputStructure, modes)

    # -- info -------------------------------------------------------------------------
    def _validate(self):
        if not self._pointerIsSet(self.inputStructure):
            return ["Select the atomic structure."]
        fn = self.inputStructure.get().getFileName()
        if not fn or not os.path.exists(fn):
            return ["The structure's file is missing: %s" % fn]
        errors = []
        try:
            atoms = light_atoms(fn, self._selection())
        except (OSError, ValueError, IndexError) as exc:
            return ["Atoms: cannot read %s (%s)" % (fn, exc)]
        if atoms is None:  # a custom ProDy selection: checked when the protocol runs
            return errors
        n = len(atoms[0])
        if n == 0:
            return ["Atoms: the selection '%s' matches no atom of %s." % (self._selection(), fn)]
        if self.networkModel.get() == MODEL_RTB:
            dof = 6 * int(np.ceil(n / max(self.blockSize.get(), 1)))  # upper bound, checked exactly by the engine
        else:
            dof = 3 * n
        if self.numberOfModes.get() > dof:
            errors.append("%d modes asked for but the %d selected atoms have at most %d degrees of freedom."
                          % (self.numberOfModes.get(), n, dof))
        if n < 3:
            errors.append("The selection has %d atoms; normal modes need at least 3." % n)
        return errors

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        lines = ["%s of %d atoms, cutoff %.2f A, %d modes (%d enabled)"
                 % (s["model"], s["n_atoms"], s["cutoff_A"], s["n_modes"], s["n_enabled"])]
        lines.append("Eigenvalues of modes 7-9: %s" % ", ".join("%.4g" % v for v in s["eigenvalues"][6:9]))
        if s.get("bfactor_correlation") is not None:
            lines.append("Correlation of predicted fluctuations with B-factors: %.3f" % s["bfactor_correlation"])
        return lines

    def _methods(self):
        s = self.readEngineSummary()
        if s is None:
            return []
        return ["Normal modes were computed with an elastic network model (%s%s, cutoff %.1f A) on %d atoms."
                % (s["model"], ", blocks of %d residues" % s["block_size"] if s["block_size"] else "",
                   s["cutoff_A"], s["n_atoms"])]

    def _citations(self):
        cites = ["Bakan2011"]
        if self.networkModel.get() == MODEL_RTB:
            cites.append("Tama2000")
        return cites


class ProtCryoFlexVolumeToPseudoatoms(CryoFlexProtocol):
    """Represent a map by pseudoatoms: Gaussians of a given width placed by weighted k-means on the density
    above a threshold, weighted by non-negative least squares and refined jointly. Reports the correlation
    of the pseudoatomic map with the input; normal modes can then be computed on the pseudoatoms.
    """
    _label = "volume to pseudoatoms"
    _engineCommand = "pseudoatoms"
    _possibleOutputs = {"outputStructure": AtomStruct}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume", label="Map")
        form.addParam("useAutoThreshold", params.BooleanParam, default=True, label="Automatic threshold?",
                      help="Map mean + 1 standard deviation.")
        form.addParam("threshold", params.FloatParam, default=0.0, condition="not useAutoThreshold",
                      label="Density threshold")
        form.addParam("nPseudoatoms", params.IntParam, default=0, validators=[params.GE(0)],
                      label="Number of pseudoatoms", help="0: one per (2 sigma)^3 of thresholded volume.")
        form.addParam("sigma", params.FloatParam, default=0.0, validators=[params.GE(0)],
                      label="Gaussian width (A)", help="Standard deviation of each pseudoatom; 0: 0.75 voxel.")
        form.addParam("resolution", params.FloatParam, default=0.0, validators=[params.GE(0)],
                      label="Map resolution (A)", help="For the reported correlation; 0: Nyquist.")
        form.addParam("refineSteps", params.IntParam, default=150,
                      validators=[params.GE(0)], expertLevel=params.LEVEL_ADVANCED,
                      label="Refinement iterations")
        self._addGpuParams(form, default=False)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertStep, self.fitStep, self.createOutputStep)

    def convertStep(self, *formValues):
        volume_to_mrc(self.inputVolume.get(), self._enginePath(PSEUDO_INPUT_MAP))

    def fitStep(self, *formValues):
        args = ["--map", self._enginePath(PSEUDO_INPUT_MAP), "-o", self._enginePath(),
                "--refine-steps", self.refineSteps.get()]
        if not self.useAutoThreshold.get():
            args += ["--threshold=%s" % self.threshold.get()]
        for flag, param in (("--n-atoms", self.nPseudoatoms), ("--sigma", self.sigma),
                            ("--resolution", self.resolution)):
            if param.get():
                args += [flag, param.get()]
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        structure = AtomStruct(filename=self._enginePath(OUT.PSEUDO_PDB), pseudoatoms=True)
        structure.setVolume(self.inputVolume.get())
        pmap = volume_from_mrc(self._enginePath(OUT.PSEUDO_MAP))
        self._defineOutputs(outputStructure=structure, outputVolume=pmap)
        self._defineSourceRelation(self.inputVolume, structure)

    def _validate(self):
        if not self._pointerIsSet(self.inputVolume):
            return ["Select the map."]
        vol = self.inputVolume.get()
        dims = vol.getDim()
        if not dims or not (dims[0] == dims[1] == dims[2]):
            return ["The map must be cubic (it is %s)." % ("x".join(map(str, dims)) if dims else "unreadable")]
        if not self.useAutoThreshold.get():
            try:
                from ..engine.core.io.mrc import read_map
                data, _ = read_map(volume_file(vol))
            except Exception as exc:
                return ["Cannot read the map: %s" % exc]
            if not (data > self.threshold.get()).any():
                return ["No voxel is above the threshold %g (map values %.4g to %.4g)."
                        % (self.threshold.get(), data.min(), data.max())]
        return []

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        return ["%d pseudoatoms (sigma %.2f A) above threshold %.4g" % (s["n_atoms"], s["sigma_A"], s["threshold"]),
                "Correlation with the map at %.1f A: %.4f (inside the mask), %.4f (whole box)"
                % (s["resolution_A"], s["correlation"], s["correlation_box"])]
