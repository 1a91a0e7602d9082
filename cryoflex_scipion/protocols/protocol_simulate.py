"""Simulate particles with known ground truth from an atomic model."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import Acquisition
from pyworkflow.object import CsvList, Integer

from ..constants import GT_AMPLITUDES, GT_ANGLES, GT_FRAME, GT_ORIGIN
from ..convert import atomstruct_to_npz, atomstructs_to_frames, fill_particles, modes_to_array, volume_from_mrc
from ..engine.core.io.particles import read_particles
from ..engine.core.numbers import parse_number_list
from ..engine.core.outputs import Simulate as OUT
from .base import CryoFlexProtocol

CONF_RIGID, CONF_MODES, CONF_STRUCTURES = 0, 1, 2
DIST_GAUSSIAN, DIST_UNIFORM = 0, 1

# Engine inputs this protocol writes (its outputs are named in engine/core/outputs.py, Simulate).
MODEL_NPZ = "model.npz"
MODES_NPY = "modes.npy"
FRAMES_NPY = "frames.npy"


def parse_mode_list(text):
    """'7-9, 12' -> [7, 8, 9, 12] (empty text -> None); ValueError with a message otherwise."""
    return parse_number_list(text, "Modes")


class ProtCryoFlexSimulateParticles(CryoFlexProtocol):
    """Simulate particle images of an atomic model (optionally deformed along normal modes, or a set of
    structures) with random orientations, shifts, defocus, CTF and noise at a chosen SNR. Every particle
    keeps its ground truth (pose, defocus, amplitudes or structure index) for accuracy tests.
    """
    _label = "simulate particles"
    _engineCommand = "simulate"
    _possibleOutputs = {"outputParticles": "SetOfParticles", "outputVolume": "Volume"}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("conformations", params.EnumParam, default=CONF_RIGID,
                      choices=["reference only", "normal-mode deformations", "set of structures"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Conformations",
                      help="Image the reference only; the reference deformed along normal modes with random "
                           "amplitudes; or structures drawn at random from a set (e.g. trajectory frames).")
        form.addParam("inputStructure", params.PointerParam, pointerClass="AtomStruct",
                      condition="conformations != %d" % CONF_MODES, allowsNull=True,
                      label="Atomic structure", help="Reference model (PDB/mmCIF).")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes",
                      condition="conformations == %d" % CONF_MODES, allowsNull=True,
                      label="Normal modes", help="Modes and their reference structure (all its atoms are imaged).")
        form.addParam("modeList", params.StringParam, default="",
                      condition="conformations == %d" % CONF_MODES,
                      label="Modes to use", help="e.g. '7-9, 12'. Empty: the enabled modes of the set.")
        form.addParam("amplitudeDistribution", params.EnumParam, default=DIST_GAUSSIAN,
                      choices=["Gaussian (std)", "uniform (+/- range)"], condition="conformations == %d" % CONF_MODES,
                      label="Amplitude distribution")
        form.addParam("amplitudes", params.StringParam, default="100",
                      condition="conformations == %d" % CONF_MODES, label="Amplitude std or range",
                      help="One value for all modes or one per mode, in the modes' units (unit-norm modes over "
                           "all coordinates, the HEMNMA convention).")
        form.addParam("inputStructures", params.PointerParam, pointerClass="SetOfAtomStructs",
                      condition="conformations == %d" % CONF_STRUCTURES, allowsNull=True,
                      label="Structures", help="Structures with the same atoms as the reference (e.g. MD frames).")
        form.addParam("atomSelection", params.StringParam, default="not hydrogen",
                      label="Atoms to image",
                      help="ProDy selection, e.g. 'not hydrogen', 'protein', 'all'. Ignored for normal modes.")

        form.addSection(label="Images")
        form.addParam("nParticles", params.IntParam, default=1000, validators=[params.GT(0)],
                      label="Number of particles")
        form.addParam("boxSize", params.IntParam, default=128, validators=[params.GE(16)], label="Box size (px)")
        form.addParam("samplingRate", params.FloatParam, default=1.5, validators=[params.GT(0)],
                      label="Pixel size (A)")
        form.addParam("maxShift", params.FloatParam, default=5.0, validators=[params.GE(0)],
                      label="Max shift (A)", help="Shifts uniform in +/- this on x and y.")
        form.addParam("addNoise", params.BooleanParam, default=True, label="Add noise?")
        form.addParam("snr", params.FloatParam, default=0.1, condition="addNoise", validators=[params.GT(0)],
                      label="SNR", help="Variance of the clean (CTF-modulated) image over the variance of the noise.")
        form.addParam("noiseBeforeCtf", params.FloatParam, default=0.5,
                      condition="addNoise",
                      expertLevel=params.LEVEL_ADVANCED, validators=[params.Range(0, 1)],
                      label="Noise fraction before CTF",
                      help="Part of the noise variance added before the CTF (structural noise, Sorzano et al. 2007).")
        form.addParam("atomSigma", params.FloatParam, default=0.0,
                      validators=[params.GE(0)], expertLevel=params.LEVEL_ADVANCED,
                      label="Atom width (A)", help="Gaussian std of each atom; 0 = one pixel.")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED, label="Random seed")

        form.addSection(label="CTF")
        form.addParam("applyCtf", params.BooleanParam, default=True, label="Apply CTF?")
        line = form.addLine("Defocus range (A)", condition="applyCtf")
        line.addParam("defocusMin", params.FloatParam, default=10000.0, validators=[params.GE(0)], label="min")
        line.addParam("defocusMax", params.FloatParam, default=25000.0, validators=[params.GE(0)], label="max")
        form.addParam("astigmatism", params.FloatParam, default=0.0, validators=[params.GE(0)], condition="applyCtf",
                      expertLevel=params.LEVEL_ADVANCED, label="Max astigmatism (A)")
        form.addParam("voltage", params.FloatParam, default=300.0, validators=[params.Positive], label="Voltage (kV)")
        form.addParam("sphericalAberration", params.FloatParam, default=2.7, validators=[params.GE(0)], label="Cs (mm)")
        form.addParam("amplitudeContrast", params.FloatParam, default=0.1,
                      validators=[params.Range(0, 0.99)], label="Amplitude contrast")
        self._addBatchParam(form, default=128)
        self._addGpuParams(form)

    # -- steps ------------------------------------------------------------------
    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.simulateStep, self.createOutputStep)

    def _modelStructure(self):
        if self.conformations.get() == CONF_MODES:
            return self.inputModes.get().getPdb()
        return self.inputStructure.get()

    def convertInputStep(self, *formValues):
        os.makedirs(self._enginePath(), exist_ok=True)
        selection = "all" if self.conformations.get() == CONF_MODES else self.atomSelection.get()
        model = atomstruct_to_npz(self._modelStructure(), self._enginePath(MODEL_NPZ), selection)
        if self.conformations.get() == CONF_MODES:
            modes, numbers = modes_to_array(self.inputModes.get(), numbers=parse_mode_list(self.modeList.get()))
            if modes.shape[1] != len(model):
                raise ValueError("the modes have %d atoms but their structure has %d" % (modes.shape[1], len(model)))
            np.save(self._enginePath(MODES_NPY), modes)
            self.info("normal modes %s on %d atoms" % (numbers, len(model)))
        elif self.conformations.get() == CONF_STRUCTURES:
            frames = atomstructs_to_frames(self.inputStructures.get(), self._enginePath(FRAMES_NPY),
                                           self.atomSelection.get(), reference=model)
            self.info("%d structures of %d atoms" % (len(frames), len(model)))

    def _engineArgs(self):
        args = ["--model", self._enginePath(MODEL_NPZ), "--selection", "all", "-o", self._enginePath(),
                "-n", self.nParticles.get(), "--box", self.boxSize.get(), "--apix", self.samplingRate.get(),
                "--max-shift", self.maxShift.get(), "--voltage", self.voltage.get(),
                "--cs", self.sphericalAberration.get(), "--amplitude-contrast", self.amplitudeContrast.get(),
                "--seed", self.seed.get(), "--batch-size", self.batchSize.get()]
        if self.addNoise:
            args += ["--snr", self.snr.get(), "--noise-before-ctf", self.noiseBeforeCtf.get()]
        if self.applyCtf:
            args += ["--defocus-min", self.defocusMin.get(), "--defocus-max", self.defocusMax.get(),
                     "--astigmatism", self.astigmatism.get()]
        else:
            args.append("--no-ctf")
        if self.atomSigma.get() > 0:
            args += ["--sigma", self.atomSigma.get()]
        if self.conformations.get() == CONF_MODES:
            flag = "--amplitude-std" if self.amplitudeDistribution.get() == DIST_GAUSSIAN else "--amplitude-range"
            args += ["--modes", self._enginePath(MODES_NPY), flag, self.amplitudes.get()]
        elif self.conformations.get() == CONF_STRUCTURES:
            args += ["--frames", self._enginePath(FRAMES_NPY)]
        return args

    def simulateStep(self, *formValues):
        self.runEngine(self._engineArgs())

    def createOutputStep(self, *formValues):
        table = read_particles(self._enginePath(OUT.STAR))
        truth = np.genfromtxt(self._enginePath(OUT.GROUND_TRUTH), delimiter=",", names=True)
        amp_cols = [c for c in truth.dtype.names if c.startswith("amplitude_")]
        acq = Acquisition(voltage=self.voltage.get(), sphericalAberration=self.sphericalAberration.get(),
                          amplitudeContrast=self.amplitudeContrast.get(), magnification=10000)

        def add_truth(item, i):
            row = truth[i]
            setattr(item, GT_ANGLES, CsvList(pType=float))
            getattr(item, GT_ANGLES).set([float(row["rot"]), float(row["tilt"]), float(row["psi"])])
            setattr(item, GT_ORIGIN, CsvList(pType=float))
            getattr(item, GT_ORIGIN).set([float(row["originX_A"]), float(row["originY_A"])])
            if amp_cols:
                setattr(item, GT_AMPLITUDES, CsvList(pType=float))
                getattr(item, GT_AMPLITUDES).set([float(row[c]) for c in amp_cols])
            if "frame" in truth.dtype.names:
                setattr(item, GT_FRAME, Integer(int(row["frame"])))

        parts = self._createSetOfParticles()
        fill_particles(parts, table, acquisition=acq, item_callback=add_truth)
        volume = volume_from_mrc(self._enginePath(OUT.REFERENCE_MAP))
        self._defineOutputs(outputParticles=parts, outputVolume=volume)
        self._defineSourceRelation(self._modelSourcePointer(), parts)
        self._defineSourceRelation(self._modelSourcePointer(), volume)

    def _modelSourcePointer(self):
        return self.inputModes if self.conformations.get() == CONF_MODES else self.inputStructure

    # -- info ---------------------------------------------------------------------
    def _validate(self):
        errors = []
        conf = self.conformations.get()
        if conf == CONF_MODES:
            if not self._pointerIsSet(self.inputModes):
                errors.append("Select the normal modes.")
            else:
                if self.inputModes.get().getPdb() is None:
                    errors.append("The normal modes have no reference structure.")
                try:
                    values = [float(v) for v in self.amplitudes.get().replace(",", " ").split()]
                    if not values or any(v < 0 for v in values):
                        errors.append("Amplitudes: give one or more non-negative numbers.")
                except (ValueError, AttributeError):
                    errors.append("Amplitudes: give numbers separated by commas.")
                errors += self._modeListErrors(self.inputModes.get(), self.modeList.get())
        elif not self._pointerIsSet(self.inputStructure):
            errors.append("Select the atomic structure.")
        if conf == CONF_STRUCTURES and not self._pointerIsSet(self.inputStructures):
            errors.append("Select the set of structures.")
        if self.applyCtf and self.defocusMin.get() > self.defocusMax.get():
            errors.append("Defocus range: min must not exceed max.")
        return errors

    def _summary(self):
        lines = self._engineSummaryLines([
            ("n_particles", "Particles", "%d"), ("box", "Box (px)", "%d"), ("apix", "Pixel size (A)", "%.3f"),
            ("conformations", "Conformations", None), ("snr_requested", "SNR requested", "%.4g"),
            ("snr_measured_mean", "SNR measured", "%.4g"), ("particles_per_second", "Speed (particles/s)", "%.1f"),
            ("device", "Device", None)])
        return lines or ["Not run yet."]

    def _methods(self):
        s = self.readEngineSummary()
        if s is None:
            return []
        return ["%d particles of %d px (%.2f A/px) were simulated from an atomic model with Gaussian atoms%s%s." % (
            s["n_particles"], s["box"], s["apix"], ", CTF" if s["ctf"] else "",
            ", and noise at SNR %.3g" % s["snr_requested"] if s["snr_requested"] else " without noise")]
