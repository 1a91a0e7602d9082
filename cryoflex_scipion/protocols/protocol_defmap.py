"""DEFMap: atomic fluctuations predicted from a cryo-EM map by a 3D CNN (prediction and training)."""
import os

import pyworkflow.protocol.params as params
from pwem.objects import AtomStruct, Volume

from ..convert import atomstruct_to_npz, light_atoms, volume_origin, volume_to_mrc
from ..engine.defmap import outputs as OUT
from ..objects import DefmapModel
from .base import CryoFlexProtocol

HEAVY_PROTEIN = "protein and not hydrogen"
RESOLUTIONS = (5.0, 6.0, 7.0)

# Engine inputs these protocols write (their outputs are named in engine/defmap/outputs.py).  The training
# maps are simulated by 'defmap simulate-training-map -o <name>': this protocol names them too.
INPUT_MAP = "map.mrc"
INPUT_MODEL_NPZ = "model.npz"


def training_model(i):
    """Atomic model ``i`` (0-based) of a training set (engine .npz)."""
    return "model_%d.npz" % i


def training_map(i):
    """Map ``i`` of a training set (given, or simulated from its model)."""
    return "map_%d.mrc" % i


def training_trajectory(i):
    """MD frames of model ``i`` (.npy, frames x atoms x 3)."""
    return "trajectory_%d.npy" % i


def _default_model():
    from ..engine.defmap.model_file import DEFAULT_MODEL
    return DEFAULT_MODEL


def _atoms_in_box(structure, volume):
    """(atoms inside the volume's box, atoms) from the model file, without ProDy (GUI validation)."""
    parsed = light_atoms(structure.getFileName(), "not hydrogen")
    if parsed is None:
        return None
    from ..engine.core.maps import Grid
    coords = parsed[2]
    if len(coords) == 0:
        return 0, 0
    grid = Grid(tuple(volume.getDim())[::-1], volume.getSamplingRate(), volume_origin(volume))
    return int(grid.contains(grid.nearest_index(coords)).sum()), len(coords)  # the engine's rule


class ProtCryoFlexDefmapPredict(CryoFlexProtocol):
    """DEFMap (Matsumoto et al., Nat. Mach. Intell. 2021): predicts the dynamics (log10 RMSF) of every voxel
    of a map above a threshold from its local density (15 A cube) with a 3D CNN. With an atomic model
    fitted in the map, each atom gets the prediction of its voxel and each residue the mean of the
    z-scored values (Dynamics^DEFMap), written into the model's B-factor column.
    The default model ships with CryoFlex: trained at 5 A on simulated maps of 8 structures with
    B-factor labels (see data/defmap_5A_MODEL_CARD.md); train your own with 'defmap train'.
    """
    _label = "defmap predict"
    _engineCommand = "defmap"
    _possibleOutputs = {"outputVolume": Volume, "outputStructure": AtomStruct}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume", label="Map",
                      help="Any box shape and pixel size; it is resampled to 1.5 A voxels keeping its origin.")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct", allowsNull=True,
                      label="Atomic model fitted in the map (optional)",
                      help="Protein heavy atoms get the prediction of their voxel; residues the mean z-score. "
                           "The output model carries these values as B-factors.")
        form.addParam("useDefaultModel", params.BooleanParam, default=True, label="Use the shipped model?",
                      help="The 5 A model trained by CryoFlex on simulated maps with B-factor labels. "
                           "No: choose a model from 'defmap train'.")
        form.addParam("inputModel", params.PointerParam, pointerClass="DefmapModel", allowsNull=True,
                      condition="not useDefaultModel", label="Trained model")
        form.addParam("resolution", params.FloatParam, default=5.0,
                      validators=[params.Positive], label="Model resolution (A)",
                      help="The map is low-passed to this resolution before prediction; it must be the "
                           "resolution the model was trained at (5 A for the shipped model).")
        form.addParam("threshold", params.FloatParam, default=1.0, label="Threshold (standard deviations)",
                      help="Voxels whose value, after resampling and low-pass, exceeds the box mean by this many "
                           "standard deviations are predicted. Atoms of the model are always predicted.")
        form.addParam("contour", params.FloatParam, default=-1, expertLevel=params.LEVEL_ADVANCED,
                      label="Contour level (map units)",
                      help="Instead of the threshold: the contour level in the input map's units. -1: not used.")
        form.addParam("atomLookup", params.EnumParam, choices=["nearest", "trilinear"], default=0,
                      expertLevel=params.LEVEL_ADVANCED, label="Value at atoms",
                      help="The atom's voxel (the paper) or trilinear interpolation between voxels.")
        self._addBatchParam(form, default=2048)
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.predictStep, self.createOutputStep)

    # -- steps ---------------------------------------------------------------------
    def _modelFile(self):
        return _default_model() if self.useDefaultModel.get() else self.inputModel.get().getFileName()

    def convertInputStep(self, *formValues):
        volume_to_mrc(self.inputVolume.get(), self._enginePath(INPUT_MAP), require_cubic=False)
        if self._pointerIsSet(self.inputStructure):
            atomstruct_to_npz(self.inputStructure.get(), self._enginePath(INPUT_MODEL_NPZ), HEAVY_PROTEIN)

    def predictStep(self, *formValues):
        args = ["predict", "--map", self._enginePath(INPUT_MAP), "--model", self._modelFile(),
                "--resolution", self.resolution.get(), "-o", self._enginePath(),
                "--atom-lookup", self.getEnumText("atomLookup"), "--batch-size", self.batchSize.get()]
        if self.contour.get() != -1:
            args += ["--contour", self.contour.get()]
        else:
            args += ["--threshold", self.threshold.get()]
        if self._pointerIsSet(self.inputStructure):
            args += ["--atoms", self._enginePath(INPUT_MODEL_NPZ)]
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        from ..convert import volume_from_mrc
        volume = volume_from_mrc(self._enginePath(OUT.MAP))
        volume.setObjComment("DEFMap: predicted log10 RMSF (A), 0 outside the predicted voxels")
        outputs = {"outputVolume": volume}
        if self._pointerIsSet(self.inputStructure):
            structure = AtomStruct(filename=self._enginePath(OUT.PDB))
            structure.setObjComment("B-factor column: Dynamics^DEFMap (residue mean of z-scored predictions)")
            outputs["outputStructure"] = structure
        self._defineOutputs(**outputs)
        for out in outputs.values():
            self._defineSourceRelation(self.inputVolume, out)
        if "outputStructure" in outputs:
            self._defineSourceRelation(self.inputStructure, outputs["outputStructure"])

    # -- info -----------------------------------------------------------------------
    def _validate(self):
        errors = []
        if not self._pointerIsSet(self.inputVolume):
            return ["Map: no volume selected."]
        volume = self.inputVolume.get()
        if not volume.getSamplingRate() or volume.getSamplingRate() <= 0:
            errors.append("The map has no pixel size (sampling rate): set it when importing the volume.")
        if not self.useDefaultModel.get() and not self._pointerIsSet(self.inputModel):
            errors.append("Choose a trained model or use the shipped one.")
        trained = 5.0 if self.useDefaultModel.get() else (
            self.inputModel.get().getResolution() if self._pointerIsSet(self.inputModel) else None)
        if trained and abs(trained - self.resolution.get()) > 1e-6:
            errors.append("The model was trained at %g A but %g A is requested: set 'Model resolution' to %g or "
                          "use a model trained at %g A." % (trained, self.resolution.get(), trained,
                                                              self.resolution.get()))
        if self.useDefaultModel.get() and not os.path.exists(_default_model()):
            errors.append("The shipped model %s is missing: reinstall cryoflex_scipion." % _default_model())
        if self._pointerIsSet(self.inputStructure) and volume.getSamplingRate():
            counts = _atoms_in_box(self.inputStructure.get(), volume)
            if counts is not None and counts[0] == 0:
                errors.append("No atom of %s lies inside the map's box (origin %s A): model and map are not in "
                              "the same frame." % (os.path.basename(self.inputStructure.get().getFileName()),
                                                   tuple(round(o, 1) for o in volume_origin(volume))))
        return errors

    def _warnings(self):
        if self._pointerIsSet(self.inputStructure) and self._pointerIsSet(self.inputVolume) \
                and self.inputVolume.get().getSamplingRate():
            counts = _atoms_in_box(self.inputStructure.get(), self.inputVolume.get())
            if counts is not None and 0 < counts[0] < counts[1]:
                return ["%d of the model's %d atoms lie outside the map's box; they get no prediction."
                        % (counts[1] - counts[0], counts[1])]
        return []

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        lines = ["Map %s voxels resampled to 1.5 A (%s), low-passed to %g A; %d voxels above threshold (%s)"
                 % ("x".join(str(v) for v in s["input_shape_zyx"][::-1]),
                    "x".join(str(v) for v in s["grid_1.5A_shape_zyx"][::-1]), s["resolution"], s["n_kept_voxels"],
                    s["threshold_rule"]),
                 "Model: %s" % ("shipped 5 A model" if self.useDefaultModel.get() else s["model"])]
        if s.get("n_atoms"):
            lines.append("Atomic model: %d heavy atoms, %.1f%% inside the map"
                         % (s["n_atoms"], 100 * s["atoms_inside_fraction"]))
        c = s.get("correlations") or {}
        if c:
            lines.append("Against the model's B-factors: r atoms %.3f (raw map intensity %.3f), r residues %.3f"
                         % (c["r_atoms_pred_vs_bfactor"], c["r_atoms_intensity_vs_bfactor"],
                            c["r_residues_pred_vs_bfactor"]))
        lines.append("%.1f s on %s" % (s["seconds"]["total"], s["device"]))
        lines += ["Warning: %s" % w for w in s.get("warnings", [])]
        return lines

    def _methods(self):
        s = self.readEngineSummary()
        if s is None:
            return []
        return ["Local dynamics were predicted from the map with DEFMap (3D CNN on 15 A sub-voxels of the map "
                "low-passed to %g A) for %d voxels." % (s["resolution"], s["n_predicted_voxels"])]


class ProtCryoFlexDefmapTrain(CryoFlexProtocol):
    """Trains a DEFMap network (the paper's 3D CNN, 5,774,785 parameters) on atomic models with
    per-atom fluctuations. Each voxel that contains an atom is labelled with the log10 RMSF of the
    nearest atom. Labels come from the B-factors (RMSF = sqrt(3B/8 pi^2)) or from MD trajectories
    (heavy-atom RMSF after superposition on C-alpha). Maps are simulated from the models, each atom
    blurred by its B-factor at the chosen resolution, or given (fitted maps, one per model).
    Augmentation: 90/180/270 degree rotations about x, y and z. Loss MSE, Adam; the epoch with the
    lowest validation loss is kept. Checkpoints each epoch: continue mode resumes.
    """
    _label = "defmap train"
    _engineCommand = "defmap"
    _possibleOutputs = {"outputModel": DefmapModel}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputStructures", params.MultiPointerParam, pointerClass="AtomStruct",
                      label="Atomic models", help="Protein heavy atoms of each model are used.")
        form.addParam("mapSource", params.EnumParam, choices=["simulate from the models", "given maps"], default=0,
                      label="Maps", help="Simulated: each atom a Gaussian widened by its B-factor, at the "
                                         "resolution below (what the shipped model was trained on). Given: one "
                                         "map per model, in the same order, with the model fitted in it.")
        form.addParam("inputVolumes", params.MultiPointerParam, pointerClass="Volume", allowsNull=True,
                      condition="mapSource == 1", label="Maps (one per model, same order)")
        form.addParam("labelSource", params.EnumParam, choices=["B-factors", "MD trajectories"], default=0,
                      label="Labels", help="RMSF from the models' B-factors, or from MD trajectories.")
        form.addParam("trajectories", params.StringParam, default="", condition="labelSource == 1",
                      label="Trajectory files (one per model)",
                      help="Space-separated paths, same order as the models: .dcd (all atoms of the model file, "
                           "in its order) or .npy (frames x atoms x 3, the heavy protein atoms).")
        form.addParam("resolution", params.EnumParam, choices=["5", "6", "7"], default=0,
                      label="Resolution (A)", help="Maps are low-passed to it; prediction must use the same.")

        form.addSection(label="Training")
        form.addParam("epochs", params.IntParam, default=100, validators=[params.GT(0)], label="Epochs (maximum)")
        form.addParam("patience", params.IntParam, default=10, validators=[params.GT(0)],
                      label="Early-stopping patience", help="Epochs without a better validation loss before "
                                                            "stopping.")
        form.addParam("samplesPerEpoch", params.IntParam, default=0,
                      validators=[params.GE(0)], expertLevel=params.LEVEL_ADVANCED,
                      label="Samples per epoch", help="0: every training voxel once per epoch.")
        form.addParam("valFraction", params.FloatParam, default=0.1,
                      label="Validation fraction",
                      validators=[params.Range(0.01, 0.5)])
        form.addParam("learningRate", params.FloatParam, default=5e-5,
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      label="Learning rate (Adam)")
        self._addBatchParam(form, default=128)
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.trainStep, self.createOutputStep)

    def _resolution(self):
        return RESOLUTIONS[self.resolution.get()]

    def _pairs(self):
        return range(len(self.inputStructures))

    # -- steps ---------------------------------------------------------------------
    def convertInputStep(self, *formValues):
        from ..convert import trajectory_to_frames
        files = self.trajectories.get().split() if self.labelSource.get() == 1 else []
        for i, pointer in zip(self._pairs(), self.inputStructures):
            npz = self._enginePath(training_model(i))
            atomstruct_to_npz(pointer.get(), npz, HEAVY_PROTEIN)
            if files:
                trajectory_to_frames(pointer.get().getFileName(), files[i], HEAVY_PROTEIN,
                                     self._enginePath(training_trajectory(i)))
            if self.mapSource.get() == 1:
                volume_to_mrc(self.inputVolumes[i].get(), self._enginePath(training_map(i)), require_cubic=False)
            else:
                self.runEngine(["simulate-training-map", "--atoms", npz, "--resolution", self._resolution(),
                                "-o", self._enginePath(training_map(i))], deviceArgs=False)

    def trainStep(self, *formValues):
        # The engine resumes from extra/engine/checkpoint.pt (continue mode); the checkpoint is kept
        # until the model file is written.
        args = ["train", "--resolution", self._resolution(), "-o", self._enginePath(), "--epochs", self.epochs.get(),
                "--patience", self.patience.get(), "--val-fraction", self.valFraction.get(),
                "--lr", self.learningRate.get(), "--batch-size", self.batchSize.get(), "--overwrite"]
        if self.samplesPerEpoch.get() > 0:
            args += ["--samples-per-epoch", self.samplesPerEpoch.get()]
        for i in self._pairs():
            pair = [self._enginePath(training_map(i)), self._enginePath(training_model(i))]
            if self.labelSource.get() == 1:
                pair.append(self._enginePath(training_trajectory(i)))
            args += ["--pair"] + pair
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        from ..engine.defmap.model_file import model_metadata
        path = self._enginePath(OUT.MODEL)
        model = DefmapModel(filename=path)
        model.setResolution(self._resolution())
        meta = model_metadata(path)
        model.setMetadata({k: meta.get(k) for k in ("resolution", "label_mean", "label_std", "label_source",
                                                      "training_set", "validation", "n_parameters")})
        self._defineOutputs(outputModel=model)
        for pointer in self.inputStructures:
            self._defineSourceRelation(pointer, model)

    # -- info -----------------------------------------------------------------------
    def _validate(self):
        errors = []
        n = len(self.inputStructures)
        if n == 0:
            errors.append("Give at least one atomic model.")
        if self.mapSource.get() == 1:
            if len(self.inputVolumes) != n:
                errors.append("Given maps: %d maps for %d models; give one map per model, in the same order."
                              % (len(self.inputVolumes), n))
            for i, (vol, struct) in enumerate(zip(self.inputVolumes, self.inputStructures)):
                if vol.get() is None or struct.get() is None:
                    continue
                if not vol.get().getSamplingRate():
                    errors.append("Map %d has no pixel size (sampling rate)." % (i + 1))
                    continue
                counts = _atoms_in_box(struct.get(), vol.get())
                if counts is not None and counts[0] == 0:
                    errors.append("Model %d lies outside map %d's box: they are not in the same frame." % (i + 1, i + 1))
        if self.labelSource.get() == 1:
            files = self.trajectories.get().split()
            if len(files) != n:
                errors.append("MD trajectories: %d files for %d models; give one per model." % (len(files), n))
            errors += ["Trajectory not found: %s" % f for f in files if not os.path.exists(f)]
            errors += ["Trajectory %s: use .dcd or .npy" % f for f in files if not f.endswith((".dcd", ".npy"))]
        elif self.mapSource.get() == 0:
            pass  # B-factors are checked by the engine (a model without them is refused with its name)
        return errors

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        v = s["validation"]
        lines = ["%d training and %d validation voxels from %d models; %d epochs on %s"
                 % (s["n_train"], s["n_val"], len(self.inputStructures), s["epochs"], s["device"]),
                 "Best epoch %s: validation loss %.3f (standardised), r %.3f" % (v["best_epoch"],
                                                                                v["val_loss_standardised"], v["val_r"])]
        lines += ["Warning: %s" % w for w in s.get("warnings", [])]
        return lines
