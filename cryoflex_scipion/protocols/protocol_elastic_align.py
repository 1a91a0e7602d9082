"""HEMNMA elastic 3D-to-2D alignment of particles against a normal-mode reference."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticlesFlex

from ..constants import FLEX_NMA
from ..convert import (atomstruct_to_npz, fill_flex_particles, light_atoms, modes_to_array, set_nma_flex_info,
                       write_particles_star)
from ..engine.hemnma import outputs as OUT
from .base import CryoFlexProtocol
from .protocol_simulate import parse_mode_list

CTF_MODES = ["raw images (CTF)", "phase-flipped images", "no CTF (corrected or absent)"]
CTF_ARGS = ["full", "phase-flipped", "none"]

# Engine inputs this protocol writes (its outputs are named in engine/hemnma/outputs.py).  The input STAR is
# not named like the output STAR (OUT.STAR), which goes to the same folder.
INPUT_STAR = "input_particles.star"
MODES_NPY = "modes.npy"
MODE_NUMBERS_NPY = "mode_numbers.npy"
REFERENCE_NPZ = "reference.npz"
OTHER_REFERENCE_NPZ = "other_reference_%d.npz"


class ProtCryoFlexElasticAlign(CryoFlexProtocol):
    """HEMNMA: for every particle, the normal-mode amplitudes, angles and shifts that best match the
    image with a CTF-modulated projection of the elastically deformed reference. Global search over
    orientations and deformations, then joint Levenberg-Marquardt refinement, coarse to fine, batched
    on one or several GPUs (or the CPU). Outputs particles with flexibility information (zFlex =
    amplitudes) and their new alignment.
    """
    _label = "elastic alignment (HEMNMA)"
    _engineCommand = "hemnma"
    _possibleOutputs = {"outputParticles": SetOfParticlesFlex}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles", label="Particles")
        form.addParam("ctfMode", params.EnumParam, default=0, choices=CTF_MODES, label="Images are",
                      help="Raw images are compared with CTF-modulated projections; phase-flipped ones with "
                           "|CTF|-modulated projections; CTF-corrected ones with plain projections.")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes", label="Normal modes",
                      help="Modes and their reference structure (atoms or pseudoatoms).")
        form.addParam("modeList", params.StringParam, default="",
                      label="Modes to use", help="e.g. '7-9'. Empty: the enabled modes of the set.")
        form.addParam("otherReferences", params.MultiPointerParam, pointerClass="AtomStruct", allowsNull=True,
                      label="Other conformations (optional)",
                      help="Other structures of the same molecule (e.g. the other end state of the motion, "
                           "superposed or not), with the atoms of the modes' reference. Every particle is also "
                           "aligned against them and against the intermediates, moving along the same modes, "
                           "and the best fit wins. Use them when the particles move further than the modes "
                           "reach: the fit quality of a run without them shows it (on a real closed -> open "
                           "transition the most open particles went from 45 to 2 deg angular error). "
                           "Amplitudes stay in the reference's modes. Each conformation costs one alignment.")
        form.addParam("intermediates", params.IntParam, default=1, validators=[params.GE(0)],
                      label="Intermediates between conformations",
                      help="Linear interpolations between consecutive conformations (only with other "
                           "conformations). 1 is a good default; 3 was slightly better on AdK.")
        form.addSection(label="Search")
        form.addParam("workingSize", params.IntParam, default=128, validators=[params.GE(16)],
                      label="Working image size (px)",
                      help="Particles are Fourier-cropped (anti-aliased) to at most this size, as HEMNMA recommends.")
        form.addParam("angularStep", params.FloatParam, default=10.0, validators=[params.Range(1, 45)],
                      label="Global search step (deg)")
        form.addParam("maxShift", params.FloatParam, default=5.0, validators=[params.GE(0)],
                      label="Shift range (A)", help="Shifts searched within +/- this.")
        form.addParam("amplitudeBound", params.FloatParam, default=0.0, validators=[params.GE(0)],
                      label="Amplitude bound", help="|amplitude| limit per mode; 0: 5 A RMS displacement per mode.")
        form.addParam("useInputAlignment", params.EnumParam, default=0,
                      choices=["global search only", "input alignment as one more start", "refine input alignment only"],
                      label="Input alignment", help="How an existing projection alignment of the particles is used.")
        form.addParam("starts", params.IntParam, default=3,
                      validators=[params.GE(1)], expertLevel=params.LEVEL_ADVANCED, label="Starts",
                      help="Distinct orientations from the global search refined per particle.")
        form.addParam("searchLevels", params.IntParam, default=3,
                      validators=[params.GE(1)], expertLevel=params.LEVEL_ADVANCED,
                      label="Amplitude levels in the search", help="Deformations tried per mode in the global search.")
        form.addParam("coarseIterations", params.IntParam, default=10,
                      validators=[params.GE(0)], expertLevel=params.LEVEL_ADVANCED,
                      label="Coarse iterations")
        form.addParam("fineIterations", params.IntParam, default=8,
                      validators=[params.GE(0)], expertLevel=params.LEVEL_ADVANCED,
                      label="Fine iterations")
        form.addParam("atomSigma", params.FloatParam, default=1.0,
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      label="Atom width (A)", help="Gaussian width of the reference atoms.")
        form.addSection(label="Outliers")
        form.addParam("outlierThreshold", params.FloatParam, default=3.2, validators=[params.GE(0)],
                      label="Mahalanobis threshold", help="Particles whose amplitudes lie further than this "
                                                          "from the mean are flagged (the DeepHEMNMA paper used 3.2); 0: none.")
        form.addParam("outputKept", params.BooleanParam, default=True, label="Also output the kept subset?")
        self._addBatchParam(form, default=256)
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.alignStep, self.createOutputStep)

    def _modeNumbers(self):
        return parse_mode_list(self.modeList.get())

    def convertInputStep(self, *formValues):
        write_particles_star(self.inputParticles.get(), self._enginePath(INPUT_STAR),
                             use_alignment=self.useInputAlignment.get() > 0, use_ctf=self.ctfMode.get() < 2)
        modes = self.inputModes.get()
        vectors, numbers = modes_to_array(modes, numbers=self._modeNumbers())
        np.save(self._enginePath(MODES_NPY), vectors)
        np.save(self._enginePath(MODE_NUMBERS_NPY), np.array(numbers))
        model = atomstruct_to_npz(modes.getPdb(), self._enginePath(REFERENCE_NPZ), "all")
        if len(model) != vectors.shape[1]:
            raise ValueError("the modes have %d atoms but their reference structure has %d"
                             % (vectors.shape[1], len(model)))
        for i, structure in enumerate(self._otherReferences()):
            atomstruct_to_npz(structure, self._enginePath(OTHER_REFERENCE_NPZ % i), "all")

    def _otherReferences(self):
        return [p.get() for p in self.otherReferences if p.get() is not None]

    def alignStep(self, *formValues):
        args = ["--particles", self._enginePath(INPUT_STAR), "--atoms", self._enginePath(REFERENCE_NPZ),
                "--modes", self._enginePath(MODES_NPY), "-o", self._enginePath(), "--ctf-mode", CTF_ARGS[self.ctfMode.get()],
                "--size", self.workingSize.get(), "--angular-step", self.angularStep.get(),
                "--max-shift", self.maxShift.get(), "--starts", self.starts.get(),
                "--search-levels", self.searchLevels.get(), "--coarse-iterations", self.coarseIterations.get(),
                "--fine-iterations", self.fineIterations.get(), "--sigma", self.atomSigma.get(),
                "--outlier-threshold", self.outlierThreshold.get(), "--batch-size", self.batchSize.get(),
                "--overwrite"]  # the run's folder is its own: resume the same job, restart cleanly after an edit
        if self.amplitudeBound.get() > 0:
            args += ["--amplitude-bound", self.amplitudeBound.get()]
        others = self._otherReferences()
        if others:
            args += ["--other-references"] + [self._enginePath(OTHER_REFERENCE_NPZ % i) for i in range(len(others))]
            args += ["--intermediates", self.intermediates.get()]
        if self.useInputAlignment.get() == 1:
            args.append("--use-input-poses")
        elif self.useInputAlignment.get() == 2:
            args.append("--local")
        if self._useGpuNow() and len(self.getGpuList()) > 1:
            args += ["--gpus", "all"]  # one worker per GPU given to this run (also through a queue)
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        parts = self.inputParticles.get()
        with np.load(self._enginePath(OUT.RESULTS)) as r:
            res = {k: r[k] for k in r.files}
        numbers = np.load(self._enginePath(MODE_NUMBERS_NPY))
        reference = os.path.abspath(self.inputModes.get().getPdb().getFileName())
        flex = SetOfParticlesFlex(filename=self._newSetPath("particles_flex.sqlite"), progName=FLEX_NMA)
        fill_flex_particles(flex, parts, res["euler"], res["origin_A"], res["amplitudes"], res["cost"],
                            res["mahalanobis"], fit_quality=res.get("fit_quality"), reference=res.get("reference"))
        n_atoms = np.load(self._enginePath(MODES_NPY), mmap_mode="r").shape[1]
        set_nma_flex_info(flex, numbers, os.path.abspath(self._enginePath(MODES_NPY)), reference, n_atoms)
        outputs = {"outputParticles": flex}
        if self.outputKept.get() and self.outlierThreshold.get() > 0:
            kept = SetOfParticlesFlex(filename=self._newSetPath("particles_flex_kept.sqlite"), progName=FLEX_NMA)
            fill_flex_particles(kept, parts, res["euler"], res["origin_A"], res["amplitudes"], res["cost"],
                                res["mahalanobis"], keep=~res["outlier"], fit_quality=res.get("fit_quality"),
                                reference=res.get("reference"))
            set_nma_flex_info(kept, numbers, os.path.abspath(self._enginePath(MODES_NPY)), reference, n_atoms)
            outputs["outputParticlesKept"] = kept
        self._defineOutputs(**outputs)
        for out in outputs.values():
            self._defineSourceRelation(self.inputParticles, out)
            self._defineSourceRelation(self.inputModes, out)

    # -- info ---------------------------------------------------------------------------
    def _validate(self):
        errors = self._validateParticles(self.inputParticles, needCtf=self.ctfMode.get() < 2,
                                         needAlignment=self.useInputAlignment.get() > 0)
        if not self._pointerIsSet(self.inputModes):
            return errors + ["Select the normal modes."]
        modes = self.inputModes.get()
        pdb = modes.getPdb()
        if pdb is None or not os.path.exists(pdb.getFileName() or ""):
            return errors + ["The normal modes have no reference structure file."]
        mode_errors = self._modeListErrors(modes, self.modeList.get())
        if mode_errors:
            return errors + mode_errors
        if self._modeNumbers() is None:
            enabled = [m.getObjId() for m in modes.iterItems(orderBy="id") if m.isEnabled()]
            if not enabled:
                errors.append("No mode of the set is enabled: give the modes to use.")
        first = next(iter(modes.iterItems(orderBy="id")), None)
        if first is not None and os.path.exists(first.getModeFile()):
            with open(first.getModeFile()) as fh:
                n_mode_atoms = sum(1 for line in fh if line.strip())
            with open(pdb.getFileName()) as fh:
                n_atoms = sum(1 for line in fh if line.startswith(("ATOM", "HETATM")))
            if pdb.getFileName().lower().endswith(".pdb") and n_atoms != n_mode_atoms:
                errors.append("The modes have %d atoms but their reference structure has %d."
                              % (n_mode_atoms, n_atoms))
        if self._pointerIsSet(self.inputParticles) and not errors:
            parts = self.inputParticles.get()
            box_a = parts.getXDim() * parts.getSamplingRate()
            try:
                _, _, coords = light_atoms(pdb.getFileName())
                radius = float(np.sqrt(((coords - coords.mean(0)) ** 2).sum(1)).max())
                if radius > 0.5 * box_a:
                    errors.append("The reference reaches %.0f A from its centre but the particles' box is %.0f A "
                                  "wide: check the pixel size." % (radius, box_a))
            except Exception as exc:
                errors.append("Cannot read the reference structure: %s" % exc)
        return errors

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        numbers = np.load(self._enginePath(MODE_NUMBERS_NPY)).tolist()
        return ["%d particles aligned on modes %s (%s), %.1f particles/s on %s"
                % (s["n_particles"], numbers, s["ctf_mode"], s["particles_per_second"], s["device"]),
                "Mean cost (1 - correlation): %.4f; outliers (Mahalanobis > %.1f): %d"
                % (s["cost_mean"], s["outlier_threshold"], s["outliers"]),
                "Amplitude mean %s, std %s" % (np.round(s["amplitude_mean"], 1).tolist(),
                                               np.round(s["amplitude_std"], 1).tolist())] + self._fitQualitySummary(s)

    def _fitQualitySummary(self, s):
        if "poor_fit" not in s:
            return []
        line = ("Fit quality (correlation / the best a perfect model reaches on each image) median %.3f; "
                "%d particles below %.2f (_cryoflexFitQuality)" % (s["fit_quality_median"], s["poor_fit"],
                                                                   s["poor_fit_threshold"]))
        if s["poor_fit"] > s["poor_fit_warning_share"] * s["n_particles"]:
            line += (": WARNING, the modes do not explain the conformation of %.0f %% of the particles; their "
                     "poses and amplitudes are less reliable" % (100.0 * s["poor_fit"] / s["n_particles"]))
        lines = [line]
        if s.get("conformations", 1) > 1:
            lines.append("Aligned against %d conformations (the reference, %d other(s) and intermediates); "
                         "particles per conformation %s (_cryoflexReference)"
                         % (s["conformations"], len(self._otherReferences()), s["particles_per_conformation"]))
        return lines

    def _citations(self):
        return ["Jin2014", "Harastani2020"]
