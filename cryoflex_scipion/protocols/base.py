"""Base class of CryoFlex protocols: engine launch, GPU parameters, summaries.

A CryoFlex protocol (1) validates its inputs, (2) converts Scipion objects to
files under its own ``extra/`` folder, (3) runs one engine command through
``runJob`` and (4) registers outputs from the engine's files.  It never reads
another protocol's folders: inputs come from Scipion objects only.
"""
import json
import os
import shlex
import subprocess

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.object import Pointer, PointerList
from pyworkflow.protocol.constants import STEPS_SERIAL

from .. import Plugin
from ..engine.core.numbers import parse_number_list
from ..engine.core.validate import describe_numbers, select_modes
from ..engine.core.outputs import SUMMARY


class CryoFlexProtocol(EMProtocol):
    """Shared machinery; subclasses set ``_engineCommand`` and define steps."""

    _engineCommand = None
    _summaryName = SUMMARY  # the engine's JSON summary (engine/core/outputs.py)
    _engineUsesDevice = True  # False: a CPU command without --device (no GPU substitution)
    stepsExecutionMode = STEPS_SERIAL
    _displayName = "cryoflex"  # what run boxes and forms show before the label, not the package name

    @classmethod
    def getClassLabel(cls, prependPackageName=True):
        """``cryoflex - <label>``: pyworkflow prefixes the plugin's module name (``cryoflex_scipion``); the
        plugin's name itself stays the module's, which queue templates (PLUGIN_MODULE) rely on."""
        label = cls.__dict__.get("_label", cls.__name__)
        return "%s - %s" % (cls._displayName, label) if prependPackageName else label

    # -- form helpers -------------------------------------------------------
    @classmethod
    def _addGpuParams(cls, form, default=True):
        """Hidden GPU parameters (shown in the run's execution panel)."""
        form.addHidden(params.USE_GPU, params.BooleanParam, default=default,
                       label="Use GPU for execution",
                       help="Run the engine on a GPU. Without a visible GPU it falls back to the CPU.")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                       label="Choose GPU IDs",
                       help="GPU to use (first one of the list); with a queue the ids are assigned by the queue.")

    @classmethod
    def _addBatchParam(cls, form, default=128, expert=True):
        form.addParam("batchSize", params.IntParam, default=default, validators=[params.GE(1)],
                      expertLevel=params.LEVEL_ADVANCED if expert else params.LEVEL_NORMAL,
                      label="Batch size",
                      help="Particles per GPU/CPU batch. Halved automatically if the GPU runs out of memory.")

    # -- steps ----------------------------------------------------------------
    def _insertFormSteps(self, *steps):
        """Insert ``steps`` (methods taking ``*formValues``), each with the form's values as its argument.

        Scipion's continue mode reruns exactly the steps whose arguments changed; with the form's values
        in every step, an edited parameter or a re-created input reruns the work instead of keeping the old
        outputs, and the engine's fingerprints then decide what of the earlier work can be resumed."""
        values = self._formValues()
        for step in steps:
            self._insertFunctionStep(step, values)

    def _formValues(self):
        """The form's parameters as one string: values, and for inputs their object ids and files' times."""
        parts = []
        for name, _ in self._definition.iterParams():
            attr = getattr(self, name, None)
            if isinstance(attr, (Pointer, PointerList)):
                parts.append("%s=%s" % (name, self._inputStamp(attr)))
            elif hasattr(attr, "get"):
                parts.append("%s=%s" % (name, attr.get()))
        return ";".join(parts)

    @staticmethod
    def _inputStamp(attr):
        stamps = []
        for pointer in ([attr] if isinstance(attr, Pointer) else list(attr)):
            obj = pointer.get()
            if obj is None:
                stamps.append("none")
                continue
            path = obj.getFileName() if hasattr(obj, "getFileName") else None
            mtime = os.path.getmtime(path) if path and os.path.exists(path) else 0
            stamps.append("%s:%s:%.0f" % (obj.getObjId(), pointer.getExtended(), mtime))
        return ",".join(stamps)

    # -- paths ----------------------------------------------------------------
    def _newSetPath(self, name):
        """Path of an output set's database in this run's folder, emptied first: a rerun (continue mode after
        an edit) writes a new set rather than appending to the one of the earlier run."""
        path = self._getPath(name)
        if os.path.exists(path):
            os.remove(path)
        return path

    def _enginePath(self, *names):
        """Path in the folder of the engine's inputs and outputs (this run's extra/engine, created here)."""
        folder = self._getExtraPath("engine")
        if not os.path.isdir(folder) and os.path.isdir(self._getExtraPath()):
            os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, *names)

    # -- engine launch --------------------------------------------------------
    def _useGpuNow(self):
        return self.allowsGpu() and self.usesGpu()

    def runEngine(self, args, command=None, deviceArgs=None):
        """Run ``python -m cryoflex_scipion.engine <command> <args>`` through runJob.

        On GPU the program is ``CUDA_VISIBLE_DEVICES=%(GPU)s ...`` so pyworkflow
        substitutes the GPU ids (also when the run goes through a queue); every
        literal ``%`` in the arguments is then doubled, as that substitution
        formats them.  On CPU no GPU is made visible.  ``deviceArgs=False``: an
        engine action without a device (default: the class's ``_engineUsesDevice``).
        """
        command = command or self._engineCommand
        os.makedirs(self._enginePath(), exist_ok=True)
        quoted = " ".join(shlex.quote(str(a)) for a in args)
        engine = Plugin.getEngineCommand(command)
        if not (self._engineUsesDevice if deviceArgs is None else deviceArgs):
            program, arguments = engine, quoted
        elif self._useGpuNow():
            program = "CUDA_VISIBLE_DEVICES=%(GPU)s " + engine
            arguments = quoted.replace("%", "%%") + " --device auto"
        else:
            program = "CUDA_VISIBLE_DEVICES= " + engine
            arguments = quoted + " --device cpu"
        try:
            self.runJob(program, arguments, numberOfMpi=1, numberOfThreads=1)
        except subprocess.CalledProcessError:
            message = self._lastEngineError()
            if message:  # the engine's own explanation instead of "returned non-zero exit status"
                raise RuntimeError(message) from None
            raise

    def _lastEngineError(self):
        """The last 'ERROR: ...' line the engine wrote to this run's stderr log."""
        try:
            with open(self.getStderrLog()) as fh:
                lines = [ln.strip() for ln in fh if ln.startswith("ERROR: ")]
        except OSError:
            return None
        return lines[-1][len("ERROR: "):] if lines else None

    def readEngineSummary(self, *names):
        """The engine's JSON summary, or None while it does not exist."""
        path = self._enginePath(*(names or (self._summaryName,)))
        if not os.path.exists(path):
            return None
        with open(path) as fh:
            return json.load(fh)

    # -- validation helpers ---------------------------------------------------
    @staticmethod
    def _modeListErrors(modes, text, label="Modes to use"):
        """Problems of a mode list (``'7-9, 12'``, numbered as in the SetOfNormalModes ``modes``): syntax,
        modes the set lacks, only the rigid-body modes 1-6 of a whole analysis; the engine's rules."""
        available = [m.getObjId() for m in modes.iterItems(orderBy="id")]
        try:
            select_modes(text, max(available) if available else 0, label, source="the set")
        except ValueError as exc:
            return ["%s." % exc]
        numbers = parse_number_list(text) or []
        missing = [n for n in numbers if n not in available]
        if missing:
            return ["%s %r: modes %s are not in the set (it has modes %s)."
                    % (label, text, describe_numbers(missing), describe_numbers(available))]
        return []

    @staticmethod
    def _pointerIsSet(pointer):
        return pointer is not None and pointer.hasValue() and pointer.get() is not None

    def _validateParticles(self, pointer, label="Input particles", needAlignment=False, needCtf=False):
        """Messages for a SetOfParticles input (never raises)."""
        if not self._pointerIsSet(pointer):
            return ["%s: no set selected." % label]
        parts = pointer.get()
        errors = []
        try:
            size = parts.getSize()
        except Exception:
            size = 0
        if not size:
            errors.append("%s: the set is empty." % label)
        if not parts.getSamplingRate():
            errors.append("%s: the set has no sampling rate." % label)
        dims = parts.getDimensions() if size else None
        if dims and dims[0] != dims[1]:
            errors.append("%s: particles are %dx%d px; square images are required." % (label, dims[0], dims[1]))
        if needAlignment:
            from pwem.constants import ALIGN_PROJ
            if not parts.hasAlignmentProj():
                errors.append("%s: projection alignment (angles and shifts, %s) is required, the set has "
                              "alignment '%s'." % (label, ALIGN_PROJ, parts.getAlignment()))
        if needCtf and not parts.hasCTF():
            errors.append("%s: CTF information is required (run a CTF estimation and extract particles with it, "
                          "or import the CTF)." % label)
        return errors

    # -- info -------------------------------------------------------------------
    def _engineSummaryLines(self, keys):
        """Lines ``label: value`` for the keys present in the engine summary."""
        summary = self.readEngineSummary()
        if summary is None:
            return []
        lines = []
        for key, label, fmt in keys:
            value = summary.get(key)
            if value is not None:
                lines.append("%s: %s" % (label, fmt % value if fmt else value))
        return lines
