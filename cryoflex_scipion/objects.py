"""Scipion objects of CryoFlex: trained networks that a prediction protocol points at.

A trained model is a file written by the engine (``.pt``: weights + JSON metadata, see
``engine.core.model_file``) plus a few attributes copied from that metadata so that forms can
validate against them without opening the file.  pyworkflow registers the classes of a plugin's
``objects`` module in the ``pwem`` domain.
"""
import json

from pwem.objects import EMFile
from pyworkflow.object import Float, Integer, String


class CryoFlexTrainedModel(EMFile):
    """A trained CryoFlex network: the model file and its metadata (JSON text)."""

    def __init__(self, filename=None, **kwargs):
        EMFile.__init__(self, filename, **kwargs)
        self._method = String()
        self._metadata = String()

    def getMethod(self):
        return self._method.get()

    def setMetadata(self, metadata):
        self._metadata.set(json.dumps(metadata))

    def getMetadata(self):
        return json.loads(self._metadata.get() or "{}")

    def __str__(self):
        return "%s model (%s)" % (self.getMethod() or "CryoFlex", self.getFileName())


class DefmapModel(CryoFlexTrainedModel):
    """A DEFMap network and the resolution (A) of the maps it was trained on."""

    def __init__(self, filename=None, **kwargs):
        CryoFlexTrainedModel.__init__(self, filename, **kwargs)
        self._method.set("DEFMap")
        self._resolution = Float()

    def getResolution(self):
        return self._resolution.get()

    def setResolution(self, value):
        self._resolution.set(value)

    def __str__(self):
        return "DEFMap model, %g A (%s)" % (self.getResolution() or 0, self.getFileName())


class DeepHemnmaModel(CryoFlexTrainedModel):
    """A DeepHEMNMA network: the mode numbers it predicts and its images' size and pixel size."""

    def __init__(self, filename=None, **kwargs):
        CryoFlexTrainedModel.__init__(self, filename, **kwargs)
        self._method.set("DeepHEMNMA")
        self._modes = String()        # 1-based mode numbers, comma-separated
        self._imageSize = Integer()   # box of the training particles (px)
        self._samplingRate = Float()  # their pixel size (A)
        self._modesFile = String()    # the labels' normal modes (.npy) and reference, when known
        self._refStruct = String()
        self._nAtoms = Integer()

    def getModeNumbers(self):
        return [int(m) for m in (self._modes.get() or "").split(",") if m]

    def setModeNumbers(self, numbers):
        self._modes.set(",".join(str(int(m)) for m in numbers))

    def getImageSize(self):
        return self._imageSize.get()

    def setImageSize(self, size):
        self._imageSize.set(size)

    def getSamplingRate(self):
        return self._samplingRate.get()

    def setSamplingRate(self, apix):
        self._samplingRate.set(apix)

    def setReference(self, modes_file, ref_struct, n_atoms):
        self._modesFile.set(modes_file)
        self._refStruct.set(ref_struct)
        self._nAtoms.set(n_atoms)

    def getReference(self):
        """(modes file, reference structure, number of atoms); empty values for simulated labels."""
        return self._modesFile.get() or "", self._refStruct.get() or "", self._nAtoms.get() or 0

    def __str__(self):
        return "DeepHEMNMA model, modes %s, %s px (%s)" % (self._modes.get(), self.getImageSize(),
                                                          self.getFileName())
