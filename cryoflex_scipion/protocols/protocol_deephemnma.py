"""DeepHEMNMA: a network learns HEMNMA's amplitudes, angles and shifts, then predicts them for new particles."""

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticlesFlex

from ..constants import FLEX_NMA, GT_AMPLITUDES
from ..convert import (fill_flex_particles, has_ground_truth, nma_labels_to_npz, set_nma_flex_info,
                       write_particles_star)
from ..engine.deephemnma import outputs as OUT
from ..objects import DeepHemnmaModel
from .base import CryoFlexProtocol
from .protocol_simulate import parse_mode_list

LABEL_SOURCES = ["elastic alignment (zFlex and alignment)", "simulation ground truth"]

# Engine inputs these protocols write (their outputs are named in engine/deephemnma/outputs.py).  The input
# STAR is not named like the prediction's output STAR (OUT.STAR), which goes to the same folder.
INPUT_STAR = "input_particles.star"
LABELS_NPZ = "labels.npz"
MERGE_STAR = "merge.star"
MERGE_LABELS_NPZ = "merge_labels.npz"


def _gpu_args(protocol):
    """``--gpus all`` when several GPUs are given to the run (also through a queue)."""
    return ["--gpus", "all"] if protocol._useGpuNow() and len(protocol.getGpuList()) > 1 else []


class ProtCryoFlexDeepHEMNMATrain(CryoFlexProtocol):
    """DeepHEMNMA (Hamitouche & Jonic 2022): trains a ResNet-34 feature extractor with MLP heads
    (1000-512-128) to predict, from a particle image, its normal-mode amplitudes, its orientation (a unit
    quaternion, sign-invariant loss) and its shifts. The labels are the results of an elastic alignment
    (HEMNMA) or the ground truth of simulated particles. Labels whose amplitudes are Mahalanobis outliers
    are left out. Images are Fourier-cropped to the working size. Augmentation uses in-plane rotations,
    with psi and the shifts updated to match. Checkpoints each epoch: continue mode resumes.
    """
    _label = "deephemnma train"
    _engineCommand = "deephemnma"
    _possibleOutputs = {"outputModel": DeepHemnmaModel}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Labelled particles",
                      help="The output of an elastic alignment (SetOfParticlesFlex), or simulated particles with "
                           "their ground truth.")
        form.addParam("labelSource", params.EnumParam, choices=LABEL_SOURCES, default=0, label="Labels",
                      help="Elastic alignment: each particle's amplitudes (zFlex) and its alignment. Ground "
                           "truth: the simulation's amplitudes, angles and shifts kept on each particle.")
        form.addParam("modeList", params.StringParam, default="",
                      label="Mode numbers",
                      help="For an elastic alignment: the modes to learn among those aligned (empty: all). For "
                           "ground truth: the numbers of the simulated modes, in order (e.g. '7-9').")
        form.addSection(label="Training")
        form.addParam("workingSize", params.IntParam, default=128, validators=[params.GE(16)],
                      label="Working image size (px)", help="Particles are Fourier-cropped (anti-aliased) to it.")
        form.addParam("architecture", params.EnumParam, choices=["shared", "separate"], default=0,
                      label="Networks", help="One ResNet-34 with three heads (amplitudes, quaternion, shifts), or "
                                             "one network per target as in the paper (three times the cost).")
        form.addParam("networkSize", params.EnumParam, choices=["ResNet-34 (paper)", "small (CPU tests and demos)"],
                      default=0, expertLevel=params.LEVEL_ADVANCED, label="Network size",
                      help="The paper's ResNet-34 with 1000-512-128 heads, or a ResNet with one block per stage, "
                           "16 channels and 128-64-32 heads, which learns in minutes on a CPU.")
        form.addParam("epochs", params.IntParam, default=100, validators=[params.GT(0)], label="Epochs")
        form.addParam("timeLimit", params.FloatParam, default=0, validators=[params.GE(0)],
                      label="Time limit (minutes)", help="0: none. The learning-rate schedule is fitted to it.")
        form.addParam("valFraction", params.FloatParam, default=0.1, validators=[params.Range(0.01, 0.5)],
                      label="Validation fraction")
        form.addParam("outlierThreshold", params.FloatParam, default=3.2, validators=[params.GE(0)],
                      label="Mahalanobis threshold", help="Particles whose amplitudes lie further are left out "
                                                          "of training (0: keep all).")
        form.addParam("augment", params.BooleanParam, default=True, label="In-plane rotation augmentation?")
        form.addParam("learningRate", params.FloatParam, default=1e-3,
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      label="Peak learning rate (Adam)")
        self._addBatchParam(form, default=256)
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.trainStep, self.createOutputStep)

    # -- steps ---------------------------------------------------------------------
    def _groundTruth(self):
        return self.labelSource.get() == 1

    def convertInputStep(self, *formValues):
        parts = self.inputParticles.get()
        write_particles_star(parts, self._enginePath(INPUT_STAR), use_alignment=False)
        nma_labels_to_npz(parts, self._enginePath(LABELS_NPZ), ground_truth=self._groundTruth(),
                          mode_numbers=parse_mode_list(self.modeList.get()) if self._groundTruth() else None)

    def trainStep(self, *formValues):
        args = ["train", "--particles", self._enginePath(INPUT_STAR),
                "--labels-npz", self._enginePath(LABELS_NPZ), "-o", self._enginePath(),
                "--size", self.workingSize.get(), "--arch", self.getEnumText("architecture"),
                "--epochs", self.epochs.get(), "--val-fraction", self.valFraction.get(),
                "--outlier-threshold", self.outlierThreshold.get(), "--lr", self.learningRate.get(),
                "--batch-size", self.batchSize.get(), "--reference", self._reference(), "--overwrite"]
        if self.modeList.get().strip() and not self._groundTruth():
            args += ["--modes-list", self.modeList.get().replace(" ", "")]
        if self.timeLimit.get() > 0:
            args += ["--time-limit", 60 * self.timeLimit.get()]
        if not self.augment.get():
            args.append("--no-augment")
        if self.networkSize.get() == 1:
            args += ["--blocks", "1,1,1,1", "--width", 16, "--features", 128, "--hidden", "64,32"]
        self.runEngine(args + _gpu_args(self))

    def _reference(self):
        parts = self.inputParticles.get()
        if self._groundTruth() or not isinstance(parts, SetOfParticlesFlex):
            return "simulated particles"
        info = parts.getFlexInfo()
        return "modes %s of %s" % (info.getAttr("modesFile"), info.getAttr("refStruct"))

    def createOutputStep(self, *formValues):
        from ..engine.deephemnma.model_file import model_metadata
        path = self._enginePath(OUT.MODEL)
        meta = model_metadata(path)
        parts = self.inputParticles.get()
        model = DeepHemnmaModel(filename=path)
        model.setModeNumbers(meta["mode_numbers"])
        model.setImageSize(parts.getXDim())
        model.setSamplingRate(parts.getSamplingRate())
        keep = ("mode_numbers", "network", "working_size", "working_apix", "input_box", "input_apix", "validation",
                "training", "n_parameters", "label_source")
        model.setMetadata({k: meta[k] for k in keep if k in meta})
        if isinstance(parts, SetOfParticlesFlex) and not self._groundTruth():
            info = parts.getFlexInfo()
            model.setReference(str(info.getAttr("modesFile")), str(info.getAttr("refStruct")),
                               int(str(info.getAttr("nAtoms"))))
        self._defineOutputs(outputModel=model)
        self._defineSourceRelation(self.inputParticles, model)

    # -- info -----------------------------------------------------------------------
    def _validate(self):
        errors = self._validateParticles(self.inputParticles)
        if errors:
            return errors
        parts = self.inputParticles.get()
        try:
            numbers = parse_mode_list(self.modeList.get())
        except ValueError:
            return ["Mode numbers: write ranges like '7-9, 12'."]
        if self._groundTruth():
            if not has_ground_truth(parts):
                errors.append("The particles carry no simulated ground truth with amplitudes: choose 'elastic "
                              "alignment' labels, or simulate particles along normal modes.")
            elif numbers is None:
                errors.append("Give the numbers of the simulated modes (e.g. '7-9').")
            else:
                n = len(list(getattr(parts.getFirstItem(), GT_AMPLITUDES)))
                if n != len(numbers):
                    errors.append("The particles carry %d simulated amplitudes but %d mode numbers were given."
                                  % (n, len(numbers)))
        else:
            if not isinstance(parts, SetOfParticlesFlex) or parts.getFlexInfo().getProgName() != FLEX_NMA:
                errors.append("Labels missing: the particles are not the output of an elastic alignment (a "
                              "SetOfParticlesFlex of normal modes); use one, or ground truth of simulated particles.")
            elif not parts.hasAlignmentProj():
                errors.append("Labels missing: the particles have no projection alignment.")
            elif numbers:
                aligned = [int(v) for v in str(parts.getFlexInfo().getAttr("modeNumbers")).split(",")]
                missing = [m for m in numbers if m not in aligned]
                if missing:
                    errors.append("Modes %s were not aligned (the particles have modes %s)." % (missing, aligned))
        return errors

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        lines = ["%s network(s), modes %s, images %d px -> %d px; %d training and %d validation particles "
                 "(%d Mahalanobis outliers left out)" % (s["arch"], s["modes"], s["box"], s["working_size"],
                                                          s["n_train"], s["n_validation"], s["outliers"]),
                 "%d epochs (best %s) in %.0f s on %s" % (s["epochs"], s["best_epoch"], s["seconds"], s["device"])]
        v = s.get("validation") or {}
        if v:
            lines.append("Validation: " + ", ".join("%s %s" % (k, round(val, 3) if isinstance(val, float) else val)
                                                    for k, val in v.items() if not isinstance(val, (list, dict))))
        return lines

    def _citations(self):
        return ["Hamitouche2022"]


class ProtCryoFlexDeepHEMNMAPredict(CryoFlexProtocol):
    """Predicts normal-mode amplitudes, angles and shifts of particles with a trained DeepHEMNMA model
    (thousands of particles per second on a GPU). Optionally, the particles that HEMNMA aligned keep
    their HEMNMA values, as the paper does. Outputs a SetOfParticlesFlex (zFlex = amplitudes) with the
    predicted alignment.
    """
    _label = "deephemnma predict"
    _engineCommand = "deephemnma"
    _possibleOutputs = {"outputParticles": SetOfParticlesFlex}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputModel", params.PointerParam, pointerClass="DeepHemnmaModel", label="Trained model")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles", label="Particles",
                      help="Same box and pixel size as the training particles.")
        form.addParam("modeList", params.StringParam, default="", label="Expected modes",
                      help="Checked against the model's modes (empty: the model's).")
        form.addParam("mergeWith", params.PointerParam, pointerClass="SetOfParticlesFlex", allowsNull=True,
                      label="Keep HEMNMA values of (optional)",
                      help="An elastic alignment output: particles present in it (same image) keep its values "
                           "instead of the prediction.")
        self._addBatchParam(form, default=1024)
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.predictStep, self.createOutputStep)

    def convertInputStep(self, *formValues):
        write_particles_star(self.inputParticles.get(), self._enginePath(INPUT_STAR), use_alignment=False)
        if self._pointerIsSet(self.mergeWith):
            merge = self.mergeWith.get()
            table = write_particles_star(merge, self._enginePath(MERGE_STAR))
            numbers = nma_labels_to_npz(merge, self._enginePath(MERGE_LABELS_NPZ))
            with np.load(self._enginePath(MERGE_LABELS_NPZ)) as labels:
                table.set_amplitudes(labels["amplitudes"], numbers)
            table.to_star(self._enginePath(MERGE_STAR))

    def predictStep(self, *formValues):
        args = ["predict", "--model", self.inputModel.get().getFileName(),
                "--particles", self._enginePath(INPUT_STAR), "-o", self._enginePath(),
                "--batch-size", self.batchSize.get()]
        if self.modeList.get().strip():
            args += ["--modes-list", self.modeList.get().replace(" ", "")]
        if self._pointerIsSet(self.mergeWith):
            args += ["--merge-with", self._enginePath(MERGE_STAR)]
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        model = self.inputModel.get()
        with np.load(self._enginePath(OUT.RESULTS)) as r:
            res = {k: r[k] for k in r.files}
        flex = SetOfParticlesFlex(filename=self._newSetPath("particles_flex.sqlite"), progName=FLEX_NMA)
        fill_flex_particles(flex, self.inputParticles.get(), res["euler"], res["origin_A"], res["amplitudes"], None)
        set_nma_flex_info(flex, model.getModeNumbers(), *model.getReference())
        self._defineOutputs(outputParticles=flex)
        self._defineSourceRelation(self.inputParticles, flex)
        self._defineSourceRelation(self.inputModel, flex)

    def _validate(self):
        errors = self._validateParticles(self.inputParticles)
        if not self._pointerIsSet(self.inputModel):
            return errors + ["Choose a trained model."]
        if errors:
            return errors
        model, parts = self.inputModel.get(), self.inputParticles.get()
        # The images are Fourier-cropped to the model's working size: the field of view must match.
        fov, trained_fov = parts.getXDim() * parts.getSamplingRate(), model.getImageSize() * model.getSamplingRate()
        working = model.getMetadata().get("working_size", 0)
        if abs(fov - trained_fov) > 1e-3 * trained_fov or parts.getXDim() < working:
            errors.append("The particles are %d px of %.3f A (%.1f A wide) but the model was trained on %d px of "
                          "%.3f A (%.1f A wide, used at %d px): rescale or re-extract them to the training size."
                          % (parts.getXDim(), parts.getSamplingRate(), fov, model.getImageSize(),
                             model.getSamplingRate(), trained_fov, working))
        try:
            numbers = parse_mode_list(self.modeList.get())
        except ValueError:
            return errors + ["Expected modes: write ranges like '7-9, 12'."]
        if numbers is not None and numbers != model.getModeNumbers():
            errors.append("The model was trained on modes %s, not %s." % (model.getModeNumbers(), numbers))
        return errors

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        lines = ["%d particles predicted on modes %s, %.0f particles/s on %s"
                 % (s["n_predicted"], s["modes"], s["particles_per_second"], s["device"])]
        if s["n_merged"]:
            lines.append("%d particles kept their HEMNMA values" % s["n_merged"])
        return lines

    def _citations(self):
        return ["Hamitouche2022"]
