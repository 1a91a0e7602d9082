"""CryoTRANS morphing of a high-resolution map into a low-resolution target."""
import pyworkflow.protocol.params as params
from pwem.objects import SetOfVolumes, Volume

from ..convert import atomstruct_to_npz, volume_from_mrc, volume_to_mrc
from ..engine.cryotrans import outputs as OUT
from .base import CryoFlexProtocol

MAX_MASKS = 8

# Engine inputs this protocol writes (its outputs are named in engine/cryotrans/outputs.py).
MAP0 = "map0.mrc"
MAP1 = "map1.mrc"
REFERENCE_NPZ = "reference.npz"


def mask_file(index):
    """Partition mask ``index`` (1-based) on f0's grid."""
    return "mask_%d.mrc" % index


class ProtCryoFlexCryoTrans(CryoFlexProtocol):
    """CryoTRANS (Shen et al., Commun. Biol. 2024): learns a continuous deformation (a neural ODE whose
    velocity is an MLP) that transports the density of a high-resolution map f0 onto a low-resolution
    target f1 by minimising their Wasserstein-2 distance (log-domain Sinkhorn) on coarse-to-fine grids,
    optionally with a rigidity prior and per-part fields. The transported f0 is a high-resolution estimate
    of the target conformation; the intermediate frames are a pseudo-trajectory.
    """
    _label = "cryotrans morph"
    _engineCommand = "cryotrans"
    _possibleOutputs = {"outputVolume": Volume, "outputTrajectory": SetOfVolumes,
                        "outputDisplacement": Volume}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputVolume0", params.PointerParam, pointerClass="Volume", label="Initial map f0",
                      help="The high-resolution map whose density is moved.")
        form.addParam("inputVolume1", params.PointerParam, pointerClass="Volume", label="Target map f1",
                      help="The low-resolution map of the other conformation. If its box, pixel size or origin "
                           "differ from f0's, it is resampled onto f0's grid (see 'Resample target').")
        form.addParam("threshold0", params.FloatParam, default=-1, label="Threshold of f0",
                      help="Density below it is set to 0 before morphing. -1: mean + 1 standard deviation of "
                           "the map (a contour at the molecular envelope for a molecule in a larger box).")
        form.addParam("threshold1", params.FloatParam, default=-1, label="Threshold of f1",
                      help="As for f0. -1: mean + 1 standard deviation.")
        form.addParam("resample", params.BooleanParam, default=True, label="Resample target onto f0's grid?",
                      help="Needed when the maps differ in box, pixel size or origin; otherwise the run stops "
                           "with an error.")
        form.addParam("inputMasks", params.MultiPointerParam, pointerClass="VolumeMask,Volume", allowsNull=True,
                      label="Partition masks (optional)",
                      help="Up to %d masks on f0's grid; each part gets its own velocity field. Density above "
                           "threshold in no mask forms one more part." % MAX_MASKS)
        form.addParam("maskRigidity", params.StringParam, default="", label="Rigidity per mask",
                      help="Space-separated weights, one per mask (empty: the global rigidity weight for all).")
        form.addParam("referenceStructure", params.PointerParam, pointerClass="AtomStruct", allowsNull=True,
                      label="Reference model (optional)",
                      help="Atomic model of the target conformation fitted in f1: f0, f1 and the generated map "
                           "are scored by model-to-map FSC in the summary.")

        form.addSection(label="Training")
        form.addParam("iterations", params.IntParam, default=1000, validators=[params.GT(0)],
                      label="Iterations", help="Iterations of the W2 stages in all, split over the grid levels.")
        form.addParam("schedule", params.StringParam, default="", label="Multi-scale schedule",
                      help="'factor:iterations' from coarse to fine, e.g. 2:300,1:1350 (binning factor of "
                           "the grid). Empty: automatic from 'Iterations' (30% on the grid binned 2x when it keeps "
                           "at least 24 voxels, the rest on the full grid).")
        form.addParam("learningRate", params.FloatParam, default=1e-3,
                      validators=[params.Positive], label="Learning rate (Adam)")
        form.addParam("rigidity", params.FloatParam, default=2.0, validators=[params.GE(0)],
                      label="Rigidity weight",
                      help="Weight of the rigidity prior (distortion of small tetrahedra around the voxels), with "
                           "the W2 loss in A^2. 0 switches it off. 2 improved the AdK test maps slightly.")
        form.addParam("l2Iterations", params.IntParam, default=0, validators=[params.GE(0)],
                      label="L2 refinement iterations",
                      help="A final stage minimising the squared difference to the target on the full grid; "
                           "useful for targets of resolution close to f0's (e.g. 400 for a 3 A target).")
        form.addParam("width", params.IntParam, default=100,
                      expertLevel=params.LEVEL_ADVANCED, validators=[params.GT(0)], label="MLP width")
        form.addParam("steps", params.IntParam, default=10, validators=[params.GE(1)],
                      label="Euler steps (frames - 1)", help="Steps of the ODE integration: the trajectory has "
                                                             "this many + 1 maps.")
        form.addParam("eps", params.FloatParam, default=1e-4,
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      label="Sinkhorn epsilon", help="Entropic parameter in units of the box length squared.")
        form.addParam("sinkhornIters", params.IntParam, default=5,
                      expertLevel=params.LEVEL_ADVANCED,
                      validators=[params.GE(1)], label="Sinkhorn iterations per step")
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.trainStep, self.createOutputStep)

    # -- steps ---------------------------------------------------------------------
    def convertInputStep(self, *formValues):
        volume_to_mrc(self.inputVolume0.get(), self._enginePath(MAP0))
        volume_to_mrc(self.inputVolume1.get(), self._enginePath(MAP1))
        for i, pointer in enumerate(self.inputMasks):
            volume_to_mrc(pointer.get(), self._enginePath(mask_file(i + 1)))
        if self._pointerIsSet(self.referenceStructure):
            atomstruct_to_npz(self.referenceStructure.get(), self._enginePath(REFERENCE_NPZ), "not hydrogen")

    def _trainArgs(self):
        args = ["train", "--map0", self._enginePath(MAP0), "--map1", self._enginePath(MAP1),
                "-o", self._enginePath(), "--iterations", self.iterations.get(), "--lr", self.learningRate.get(),
                "--rigidity", self.rigidity.get(), "--l2-iterations", self.l2Iterations.get(),
                "--width", self.width.get(), "--steps", self.steps.get(), "--eps", self.eps.get(),
                "--sinkhorn-iters", self.sinkhornIters.get(), "--overwrite"]
        if self.threshold0.get() != -1:
            args += ["--threshold0", self.threshold0.get()]
        if self.threshold1.get() != -1:
            args += ["--threshold1", self.threshold1.get()]
        if self.resample.get():
            args.append("--resample")
        if self.schedule.get():
            args += ["--schedule", self.schedule.get().replace(" ", "")]
        n_masks = len(self.inputMasks)
        if n_masks:
            args += ["--masks"] + [self._enginePath(mask_file(i + 1)) for i in range(n_masks)]
            if self.maskRigidity.get().strip():
                args += ["--mask-rigidity"] + self.maskRigidity.get().split()
        if self._pointerIsSet(self.referenceStructure):
            args += ["--reference-model", self._enginePath(REFERENCE_NPZ)]
        return args

    def trainStep(self, *formValues):
        # The engine resumes from extra/engine/checkpoint.pt when the maps and settings match (Scipion continue
        # mode); with --overwrite (this run's folder belongs to it) it restarts cleanly when they changed.
        self.runEngine(self._trainArgs())

    def createOutputStep(self, *formValues):
        generated = volume_from_mrc(self._enginePath(OUT.GENERATED))
        generated.setObjComment("CryoTRANS: f0 transported onto f1")
        frames = self._createSetOfVolumes("trajectory")
        frames.setSamplingRate(generated.getSamplingRate())
        summary = self.readEngineSummary()
        for i in range(summary["frames"]):
            vol = volume_from_mrc(self._enginePath(OUT.frame(i)))
            vol.setObjComment("t = %.2f" % (i / max(summary["frames"] - 1, 1)))
            frames.append(vol)
        displacement = volume_from_mrc(self._enginePath(OUT.DISPLACEMENT_MAGNITUDE))
        displacement.setObjComment("displacement of each voxel of f0 (A)")
        self._defineOutputs(outputVolume=generated, outputTrajectory=frames, outputDisplacement=displacement)
        for out in (generated, frames, displacement):
            self._defineSourceRelation(self.inputVolume0, out)
            self._defineSourceRelation(self.inputVolume1, out)

    # -- info -----------------------------------------------------------------------
    def _validate(self):
        errors = []
        dims = []
        for label, pointer in (("Initial map f0", self.inputVolume0), ("Target map f1", self.inputVolume1)):
            if not self._pointerIsSet(pointer):
                errors.append("%s: no volume selected." % label)
                continue
            vol = pointer.get()
            x, y, z = vol.getDim() or (0, 0, 0)
            if not (x == y == z) or x == 0:
                errors.append("%s must be a cubic map (it is %dx%dx%d)." % (label, x, y, z))
            if not vol.getSamplingRate():
                errors.append("%s has no sampling rate." % label)
            dims.append((x, vol.getSamplingRate(), tuple(vol.getOrigin(force=True).getShifts())))
        if len(dims) == 2 and dims[0] != dims[1] and not self.resample.get():
            errors.append("f0 and f1 are on different grids (box %s vs %s px, %s vs %s A/px, or origins): "
                          "set 'Resample target onto f0's grid?' to Yes." % (dims[0][0], dims[1][0], dims[0][1],
                                                                              dims[1][1]))
        n_masks = len(self.inputMasks)
        if n_masks > MAX_MASKS:
            errors.append("At most %d masks (got %d)." % (MAX_MASKS, n_masks))
        if n_masks and dims:
            for pointer in self.inputMasks:
                mask = pointer.get()
                if mask is not None and tuple(mask.getDim() or ()) != (dims[0][0],) * 3:
                    errors.append("Mask %s is %s voxels; it must be on f0's grid (%d^3)."
                                  % (mask.getFileName(), "x".join(map(str, mask.getDim() or ())), dims[0][0]))
        weights = self.maskRigidity.get().split()
        if weights:
            try:
                values = [float(w) for w in weights]
                if any(v < 0 for v in values):
                    errors.append("Rigidity per mask: weights must be >= 0.")
            except ValueError:
                errors.append("Rigidity per mask: numbers separated by spaces.")
            if len(weights) != n_masks:
                errors.append("Rigidity per mask: %d weights for %d masks." % (len(weights), n_masks))
        if self.schedule.get().strip():
            from ..engine.cryotrans.morph import parse_schedule
            try:
                parse_schedule(self.schedule.get().replace(" ", ""), 1e-3)
            except ValueError as exc:
                errors.append("Multi-scale schedule: %s." % exc)
        return errors

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        lines = ["Grid: %d^3 voxels of %.3f A; %d particles (voxels of f0 above %.4g); %d part(s)"
                 % (s["size"], s["apix"], s["particles"], s["threshold0"], s["parts"]),
                 "FSC 0.5 generated vs target: %.2f A (f0 vs target: %.2f A)"
                 % (s["fsc_generated_target"]["fsc_0.5_A"], s["fsc_initial_target"]["fsc_0.5_A"]),
                 "Displacement: mean %.2f A, max %.2f A" % (s["displacement_mean_A"], s["displacement_max_A"])]
        if "model_fsc_0.5_A" in s:
            m = s["model_fsc_0.5_A"]
            lines.append("Model-to-map FSC 0.5 vs reference model: generated %.2f A, f0 %.2f A, f1 %.2f A"
                         % (m["generated"], m["initial"], m["target"]))
        lines.append("Training: %.0f s on %s" % (s["train_seconds"], s["device"]))
        lines += s.get("notes", [])
        return lines

    def _methods(self):
        s = self.readEngineSummary()
        if s is None:
            return []
        return ["The map was morphed into the target with CryoTRANS (neural ODE, Sinkhorn W2 loss, %d Euler "
                "steps%s); the generated map agrees with the target to %.2f A (FSC 0.5)."
                % (s["settings"]["steps"], ", rigidity weight %g" % s["settings"]["rigidity"]
                   if s["settings"]["rigidity"] else "", s["fsc_generated_target"]["fsc_0.5_A"])]
