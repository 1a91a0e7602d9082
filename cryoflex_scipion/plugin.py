"""The Scipion ``Plugin`` class of CryoFlex (imported lazily by the package)."""
import os
import shlex
import sys

import pwem
import pyworkflow.utils as pwutils

from . import __version__
from .constants import CRYOFLEX_PYTHON

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Plugin(pwem.Plugin):
    # pyworkflow finds the plugin's package (name, folder, protocols.conf) from
    # the class's module; the class lives here only so that importing
    # cryoflex_scipion does not import Scipion.
    __module__ = "cryoflex_scipion"
    _url = "https://github.com/cryoflex/scipion-em-cryoflex"
    _homeVar = ""
    _supportedVersions = [__version__]

    @classmethod
    def _defineVariables(cls):
        cls._defineVar(CRYOFLEX_PYTHON, "",
                       description="Python interpreter that runs the CryoFlex engine (e.g. an environment with a "
                                   "CUDA build of torch on GPU nodes). Empty: the interpreter running Scipion.")

    @classmethod
    def getEnginePython(cls):
        return cls.getVar(CRYOFLEX_PYTHON) or sys.executable

    @classmethod
    def usesExternalPython(cls):
        return bool(cls.getVar(CRYOFLEX_PYTHON))

    @classmethod
    def getEnviron(cls):
        """Environment of engine subprocesses.

        With an external interpreter, this checkout goes first on PYTHONPATH so
        the engine that runs is the one this plugin was written against.
        """
        env = pwutils.Environ(os.environ)
        if cls.usesExternalPython():
            env.update({"PYTHONPATH": _PACKAGE_PARENT}, position=pwutils.Environ.BEGIN)
        env.update({"PYTHONUNBUFFERED": "1"})
        return env

    @classmethod
    def getEngineCommand(cls, command):
        """Shell command that runs ``python -m cryoflex_scipion.engine <command>``."""
        return "%s -m cryoflex_scipion.engine %s" % (shlex.quote(cls.getEnginePython()), command)

    @classmethod
    def defineBinaries(cls, env):
        """Nothing to install: everything comes from PyPI with the package."""
        pass

    @classmethod
    def validateInstallation(cls):
        # find_spec, not import: the GUI runs Python with -O, where ProDy 2.6 fails to import (it
        # is only imported by the protocols' own processes, which run without -O).
        import importlib.util
        missing = [m for m in ("torch", "mrcfile", "prody") if importlib.util.find_spec(m) is None]
        if missing:
            return ["CryoFlex needs the Python packages %s: pip install %s" % (", ".join(missing), " ".join(missing))]
        return []
