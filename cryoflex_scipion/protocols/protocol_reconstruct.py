"""3D reconstruction from particles with known poses (direct Fourier inversion)."""
import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import FSC

from ..convert import volume_from_mrc, volume_to_mrc, write_particles_star
from ..engine.core.outputs import Reconstruct as OUT
from .base import CryoFlexProtocol

HALVES = ["auto", "random", "alternate"]

# Engine inputs this protocol writes (its outputs are named in engine/core/outputs.py, Reconstruct).
PARTICLES_STAR = "particles.star"
REFERENCE_MAP = "reference.mrc"


class ProtCryoFlexReconstruct(CryoFlexProtocol):
    """Reconstruct a map from particles with projection alignment by direct Fourier inversion with
    CTF-Wiener weighting and gridding correction; writes half-maps and their FSC. Runs on GPU or CPU and
    streams the particles from disk.
    """
    _label = "reconstruct"
    _engineCommand = "reconstruct"
    _possibleOutputs = {"outputVolume": "Volume", "outputFSC": "FSC"}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles", help="Particles with angles and shifts (projection alignment).")
        form.addParam("ignoreCtf", params.BooleanParam, default=False, label="Ignore CTF?",
                      help="Reconstruct without CTF correction (for CTF-corrected or CTF-free images).")
        form.addParam("workingSize", params.IntParam, default=0, validators=[params.GE(0)],
                      label="Reconstruction box (px)",
                      help="Fourier-crop the particles to this box first (faster, lower Nyquist). 0: full size.")
        form.addParam("referenceVolume", params.PointerParam, pointerClass="Volume", allowsNull=True,
                      label="Reference map (optional)",
                      help="A map to compare with (e.g. the ground truth of simulated data): FSC in the summary.")
        form.addParam("wiener", params.StringParam, default="fsc", expertLevel=params.LEVEL_ADVANCED,
                      label="Wiener term",
                      help="'fsc': per-shell Wiener term from the half-map FSC; or a constant relative to the "
                           "mean weight (e.g. 0.01).")
        form.addParam("padding", params.FloatParam, default=2.0,
                      expertLevel=params.LEVEL_ADVANCED,
                      validators=[params.GE(1)], label="Padding factor")
        form.addParam("halfSplit", params.EnumParam, default=0, choices=HALVES, expertLevel=params.LEVEL_ADVANCED,
                      label="Half-set split", help="auto: rlnRandomSubset when the particles carry it, else random.")
        self._addBatchParam(form, default=256)
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.reconstructStep, self.createOutputStep)

    def convertInputStep(self, *formValues):
        write_particles_star(self.inputParticles.get(), self._enginePath(PARTICLES_STAR),
                             use_ctf=not self.ignoreCtf.get())
        if self._pointerIsSet(self.referenceVolume):
            volume_to_mrc(self.referenceVolume.get(), self._enginePath(REFERENCE_MAP))

    def reconstructStep(self, *formValues):
        parts = self.inputParticles.get()
        size = self.workingSize.get() or parts.getXDim()
        origin = -(size // 2) * parts.getSamplingRate() * parts.getXDim() / size
        args = ["--particles", self._enginePath(PARTICLES_STAR), "-o", self._enginePath(),
                "--pad", self.padding.get(), "--wiener", self.wiener.get(), "--halves", HALVES[self.halfSplit.get()],
                "--batch-size", self.batchSize.get(), "--origin=%s,%s,%s" % (origin, origin, origin)]
        if self.workingSize.get():
            args += ["--size", self.workingSize.get()]
        if self.ignoreCtf.get():
            args.append("--no-ctf")
        if self._pointerIsSet(self.referenceVolume):
            args += ["--reference", self._enginePath(REFERENCE_MAP)]
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        volume = volume_from_mrc(self._enginePath(OUT.MAP), half_maps=[self._enginePath(h) for h in OUT.HALF_MAPS])
        data = np.genfromtxt(self._enginePath(OUT.FSC), delimiter=",", names=True)
        fsc = FSC(objLabel="half-maps")
        fsc.setData(data["frequency_1_per_A"].tolist(), data["fsc_half_maps"].tolist())
        self._defineOutputs(outputVolume=volume, outputFSC=fsc)
        self._defineSourceRelation(self.inputParticles, volume)
        if "fsc_reference" in data.dtype.names:
            ref = FSC(objLabel="map vs reference")
            ref.setData(data["frequency_1_per_A"].tolist(), data["fsc_reference"].tolist())
            self._defineOutputs(outputFSCReference=ref)

    # -- info ---------------------------------------------------------------------
    def _validate(self):
        errors = self._validateParticles(self.inputParticles, needAlignment=True)
        if errors:
            return errors
        parts = self.inputParticles.get()
        if not parts.hasCTF() and not self.ignoreCtf.get():
            errors.append("The particles have no CTF: set 'Ignore CTF?' to reconstruct without CTF correction.")
        if self.workingSize.get() and self.workingSize.get() > parts.getXDim():
            errors.append("Reconstruction box (%d px) is larger than the particles (%d px)."
                          % (self.workingSize.get(), parts.getXDim()))
        if self.wiener.get() != "fsc":
            try:
                float(self.wiener.get())
            except ValueError:
                errors.append("Wiener term: 'fsc' or a number.")
        if self._pointerIsSet(self.referenceVolume):
            ref = self.referenceVolume.get()
            x, y, z = ref.getDim() or (0, 0, 0)
            if not (x == y == z):
                errors.append("Reference map must be cubic (it is %dx%dx%d)." % (x, y, z))
            elif abs(ref.getSamplingRate() * x - parts.getSamplingRate() * parts.getXDim()) > 1e-3 * x:
                errors.append("Reference map box (%d px at %.3f A/px) does not match the particles "
                              "(%d px at %.3f A/px)." % (x, ref.getSamplingRate(), parts.getXDim(),
                                                          parts.getSamplingRate()))
        return errors

    def _summary(self):
        lines = self._engineSummaryLines([
            ("n_particles", "Particles", "%d"), ("size", "Box (px)", "%d"), ("apix", "Pixel size (A)", "%.3f"),
            ("resolution_0.143_A", "Resolution, half-map FSC 0.143 (A)", "%.2f"),
            ("resolution_0.5_A", "Resolution, half-map FSC 0.5 (A)", "%.2f"),
            ("reference_resolution_0.5_A", "Resolution vs reference, FSC 0.5 (A)", "%.2f"),
            ("particles_per_second", "Speed (particles/s)", "%.1f"), ("device", "Device", None)])
        return lines or ["Not run yet."]

    def _methods(self):
        s = self.readEngineSummary()
        if s is None:
            return []
        return ["A map was reconstructed from %d particles by direct Fourier inversion%s; the half-map FSC "
                "reaches 0.143 at %.2f A." % (s["n_particles"], " with CTF-Wiener weighting" if s["ctf"] else "",
                                              s["resolution_0.143_A"])]
