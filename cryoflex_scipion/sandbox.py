"""A self-contained Scipion environment for scripted projects, tests and the demo.

Scipion reads its configuration (SCIPION_HOME, SCIPION_USER_DATA, hosts.conf,
domain) from the environment when pyworkflow is first imported, so
:func:`configure` must run before anything imports pyworkflow or pwem.  This
module itself imports neither at import time.

Inside a real Scipion installation (``scipion3 python ...``) the launcher has
already configured everything and :func:`configure` is not needed.
"""
import os
import sys

__all__ = ["configure", "is_configured", "create_project", "load_project", "HOSTS_CONF"]

HOSTS_CONF = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME =
"""


def is_configured():
    """True when a Scipion installation's environment is active."""
    return bool(os.environ.get("SCIPION_HOME"))


def configure(root, python=None):
    """Point Scipion at a private folder ``root`` (created if needed).

    ``root/home`` is SCIPION_HOME (with ``config/hosts.conf`` for local runs),
    ``root/data`` is SCIPION_USER_DATA (projects live in ``root/data/projects``),
    the domain is pwem and protocols run with ``python`` (default: this
    interpreter).  Returns the environment variables that were set.
    """
    if "pyworkflow" in sys.modules:
        import pyworkflow as pw
        if os.path.abspath(pw.Config.SCIPION_USER_DATA) != os.path.abspath(os.path.join(root, "data")):
            raise RuntimeError("pyworkflow was imported before the Scipion sandbox was configured; "
                               "call cryoflex_scipion.sandbox.configure() first")
    root = os.path.abspath(root)
    home = os.path.join(root, "home")
    os.makedirs(os.path.join(home, "config"), exist_ok=True)
    os.makedirs(os.path.join(root, "data", "projects"), exist_ok=True)
    hosts = os.path.join(home, "config", "hosts.conf")
    if not os.path.exists(hosts):
        with open(hosts, "w") as fh:
            fh.write(HOSTS_CONF)
    env = {
        "SCIPION_HOME": home,
        "SCIPION_USER_DATA": os.path.join(root, "data"),
        "SCIPION_DOMAIN": "pwem",
        "SCIPION_PYTHON": python or sys.executable,
        "SCIPION_NOTIFY": "False",
        "SCIPION_TESTS": os.path.join(root, "tests"),
        "SCIPION_USE_QUEUE": "False",
    }
    os.environ.update(env)
    return env


def create_project(name, location=None):
    """Create a new project (replacing one of the same name) and make it the working directory."""
    import shutil

    from pyworkflow.project import Manager
    manager = Manager()
    path = manager.getProjectPath(name) if location is None else os.path.join(location, name)
    if os.path.exists(path):
        shutil.rmtree(path)
    project = manager.createProject(name, location=location)
    os.chdir(project.getPath())  # protocols are launched relative to the project folder
    return project


def load_project(name):
    from pyworkflow.project import Manager
    project = Manager().loadProject(name)
    os.chdir(project.getPath())
    return project
