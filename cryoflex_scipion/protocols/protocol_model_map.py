"""Map of an atomic model (Gaussian atoms, low-passed), on a given grid or on another map's grid."""
import pyworkflow.protocol.params as params
from pwem.objects import Volume

from ..convert import light_atoms, volume_from_mrc, volume_to_mrc
from .base import CryoFlexProtocol

# modelmap writes the map to the path given with -o: both names are this protocol's own.
GRID_MAP = "grid.mrc"        # engine input: the reference map whose grid is used
MODEL_MAP = "model_map.mrc"  # engine output path (-o)


class ProtCryoFlexModelToMap(CryoFlexProtocol):
    """Map of an atomic model: Gaussian atoms weighted by their electrons, low-passed to a chosen resolution
    (hard cut-off, so the map's FSC with the model ends there). Box and pixel size are given, or copied
    from a reference map so that the model's map overlays it.
    """
    _label = "model to map"
    _engineCommand = "modelmap"
    _engineUsesDevice = False  # small CPU job
    _possibleOutputs = {"outputVolume": Volume}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct", label="Atomic model")
        # Form conditions are evaluated on parameter values as text, so a pointer cannot be one: a flag
        # chooses between the two ways of giving the grid.
        form.addParam("useReferenceGrid", params.BooleanParam, default=False, label="Use the grid of a map?",
                      help="Yes: box, pixel size and origin of a map (the model's map then overlays it). No: box "
                           "and pixel size below, with the model's coordinate origin at the box centre.")
        form.addParam("referenceVolume", params.PointerParam, pointerClass="Volume", allowsNull=True,
                      condition="useReferenceGrid", label="Map whose grid to use")
        form.addParam("boxSize", params.IntParam, default=64, validators=[params.GT(1)], label="Box (voxels)",
                      condition="not useReferenceGrid")
        form.addParam("samplingRate", params.FloatParam, default=2.0, validators=[params.GT(0)],
                      label="Pixel size (A)", condition="not useReferenceGrid")
        form.addParam("resolution", params.FloatParam, default=0.0, validators=[params.GE(0)],
                      label="Resolution (A)", help="Low-pass to this resolution; 0: no filter (Nyquist).")
        form.addParam("selection", params.StringParam, default="not hydrogen", label="Atoms",
                      help="ProDy selection of the atoms to use.")

    def _insertAllSteps(self):
        self._insertFormSteps(self.simulateStep, self.createOutputStep)

    def simulateStep(self, *formValues):
        args = [self.inputStructure.get().getFileName(), "-o", self._enginePath(MODEL_MAP),
                "--selection", self.selection.get()]
        if self.useReferenceGrid.get():
            volume_to_mrc(self.referenceVolume.get(), self._enginePath(GRID_MAP))
            args += ["--like", self._enginePath(GRID_MAP)]
        else:
            args += ["--size", self.boxSize.get(), "--apix", self.samplingRate.get()]
        if self.resolution.get() > 0:
            args += ["--resolution", self.resolution.get()]
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        vol = volume_from_mrc(self._enginePath(MODEL_MAP))
        self._defineOutputs(outputVolume=vol)
        self._defineSourceRelation(self.inputStructure, vol)

    def _validate(self):
        errors = []
        if not self._pointerIsSet(self.inputStructure):
            return ["Atomic model: none selected."]
        atoms = light_atoms(self.inputStructure.get().getFileName(), "not hydrogen")
        if atoms is not None and len(atoms[0]) == 0:
            errors.append("The atomic model has no heavy atoms.")
        if self.useReferenceGrid.get() and not self._pointerIsSet(self.referenceVolume):
            errors.append("Select the map whose grid to use (or answer No to 'Use the grid of a map?').")
        apix = (self.referenceVolume.get().getSamplingRate() if self.useReferenceGrid.get()
                and self._pointerIsSet(self.referenceVolume) else self.samplingRate.get())
        if self.resolution.get() and apix and self.resolution.get() < 2 * apix:
            errors.append("Resolution %.2f A is beyond Nyquist (%.2f A at %.3f A/px)."
                          % (self.resolution.get(), 2 * apix, apix))
        return errors

    def _summary(self):
        if not hasattr(self, "outputVolume"):
            return ["Not run yet."]
        v = self.outputVolume
        return ["Map %d^3 voxels of %.3f A%s" % (v.getDim()[0], v.getSamplingRate(),
                                                ", low-passed to %.2f A" % self.resolution.get()
                                                if self.resolution.get() else "")]
