"""Test configuration: a throwaway Scipion environment for the whole session.

Scipion reads its configuration when pyworkflow is first imported, so the
sandbox is configured here, at import time, before any test module imports
pyworkflow or pwem.  Set CRYOFLEX_KEEP_TEST_DATA=1 to keep the folder.
"""
import os
import shutil
import sys
import tempfile

import pytest

from cryoflex_scipion import sandbox

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_ROOT = tempfile.mkdtemp(prefix="cryoflex-tests-")
sandbox.configure(_ROOT, python=sys.executable)


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("CRYOFLEX_KEEP_TEST_DATA"):
        shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture
def data_path():
    def path(name):
        return os.path.join(DATA, name)
    return path


@pytest.fixture
def project(request):
    """A new Scipion project (working directory set to it) for one test."""
    cwd = os.getcwd()
    name = "%s_%s" % (request.module.__name__.split(".")[-1], request.node.name)
    proj = sandbox.create_project(name[:80].replace("[", "_").replace("]", "_"))
    yield proj
    os.chdir(cwd)


def launch(project, prot):
    """Run a protocol to completion; on failure, fail the test with its logs."""
    project.launchProtocol(prot, wait=True)
    if not prot.isFinished():
        logs = ""
        for path in (prot.getStdoutLog(), prot.getStderrLog()):
            if os.path.exists(path):
                with open(path) as fh:
                    logs += fh.read()[-4000:]
        raise AssertionError("%s did not finish (%s): %s\n%s" % (prot.getClassName(), prot.getStatus(),
                                                                  prot.getErrorMessage(), logs))
    return prot


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: small networks gain little from more, and an oversubscribed machine
    (tests run beside other work) makes OpenMP's waiting threads many times slower.  Restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
