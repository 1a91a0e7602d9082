"""The package as installed: build the sdist and the wheel, check their contents, and run the engine
from the unpacked wheel alone (every command's and action's --help, one tiny HEMNMA run).

The build runs on a copy of the source (not in the checkout, whose build/ folder may hold stale
files) with ``python -m build --no-isolation``; ``build`` comes with ``pip install -e .[test]``.
A missing builder fails the test: a wheel that was not checked is not a passed test.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "cryoflex_scipion"
TOP_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "CHANGES.txt", "LICENSE",
             "protocols.conf")


def _source_files():
    """Package files of the checkout, relative to the repository (no caches)."""
    files = []
    for root, dirs, names in os.walk(os.path.join(REPO, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if not name.endswith((".pyc", ".pyo")):
                files.append(os.path.relpath(os.path.join(root, name), REPO).replace(os.sep, "/"))
    return files


def _package_dirs(files):
    """Folders of the package tree that hold Python files."""
    return sorted({f.rsplit("/", 1)[0] for f in files if f.endswith(".py")})


def _python_env(site):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = site
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# Runs inside the unpacked wheel: imports every engine module from it, then runs
# ``python -m cryoflex_scipion.engine [command [action]] --help`` (runpy, as -m does) for every command.
_HELP_SCRIPT = r"""
import argparse, contextlib, importlib, io, json, os, runpy, sys
site = sys.argv[1]
import cryoflex_scipion
result = {"file": cryoflex_scipion.__file__, "imported": [], "outside": [], "helps": {}}
engine = os.path.join(site, "cryoflex_scipion", "engine")
for root, dirs, names in os.walk(engine):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in sorted(names):
        if name.endswith(".py") and name != "__main__.py":
            rel = os.path.relpath(os.path.join(root, name), site)[:-3].replace(os.sep, ".")
            module = importlib.import_module(rel[:-len(".__init__")] if rel.endswith(".__init__") else rel)
            result["imported"].append(module.__name__)
result["outside"] = sorted(m for m, mod in sys.modules.items() if m.startswith("cryoflex_scipion")
                           and getattr(mod, "__file__", None) and not mod.__file__.startswith(site))
from cryoflex_scipion.engine.commands import COMMANDS

def helps(argv):
    out = io.StringIO()
    sys.argv = ["python -m cryoflex_scipion.engine"] + argv
    code = None
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module("cryoflex_scipion.engine", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
    result["helps"][" ".join(argv)] = [code, out.getvalue()[:200]]

for name, module_name in COMMANDS.items():
    helps([name, "--help"])
    parser = argparse.ArgumentParser()
    importlib.import_module(module_name).add_args(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices:
                helps([name, sub, "--help"])
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel, sdist) built from a copy of the source."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(os.path.join(REPO, PACKAGE), str(src / PACKAGE),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    for name in TOP_FILES:
        if os.path.exists(os.path.join(REPO, name)):
            shutil.copy2(os.path.join(REPO, name), str(src / name))
    out = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation",
                          "--outdir", str(root / "dist"), str(src)], capture_output=True, text=True, cwd=str(root))
    assert "No module named build" not in out.stderr, (
        "the 'build' package is missing: install the test extra (pip install -e .[test])")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    built = sorted(os.listdir(str(root / "dist")))
    wheel = [f for f in built if f.endswith(".whl")]
    sdist = [f for f in built if f.endswith(".tar.gz")]
    assert len(wheel) == 1 and len(sdist) == 1, built
    return str(root / "dist" / wheel[0]), str(root / "dist" / sdist[0]), root


def test_wheel_and_sdist_contents(dists):
    wheel, sdist, _ = dists
    source = _source_files()
    packages = _package_dirs(source)
    assert "cryoflex_scipion/engine/hemnma" in packages and len(packages) >= 15
    missing_init = [d for d in packages if d + "/__init__.py" not in source]
    assert not missing_init, "package folders without __init__.py (left out of the wheel): %s" % missing_init

    names = set(zipfile.ZipFile(wheel).namelist())
    data = [f for f in source if f.startswith(PACKAGE + "/data/")]
    assert {PACKAGE + "/data/defmap_5A.pt", PACKAGE + "/data/defmap_5A_MODEL_CARD.md",
            PACKAGE + "/data/adk_1ake_A.pdb"} <= set(data)
    expected = [f for f in source if f.endswith(".py")] + data + [PACKAGE + "/protocols.conf"]
    missing = sorted(set(expected) - names)
    assert not missing, "files missing from the wheel: %s" % missing
    for d in packages:
        assert d + "/__init__.py" in names
    info = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert info, "the wheel has no entry points"
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(info[0]).decode()
        metadata = zf.read(info[0].replace("entry_points.txt", "METADATA")).decode()
        assert zf.read(PACKAGE + "/data/defmap_5A.pt") == open(os.path.join(REPO, PACKAGE, "data",
                                                                            "defmap_5A.pt"), "rb").read()
    assert "[pyworkflow.plugin]" in entry_points and "cryoflex_scipion = cryoflex_scipion" in entry_points
    for requirement in ("torch>=2.11", "numpy>=1.26", "scipy>=1.10", "scipion-em>=3.11.1"):
        assert "Requires-Dist: " + requirement in metadata.replace(" (", "").replace(")", "")
    assert "Requires-Python: >=3.11" in metadata

    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name and m.isfile()}
    missing = sorted(set(expected + ["README.md", "setup.py", "protocols.conf"]) - members)
    assert not missing, "files missing from the sdist: %s" % missing


def test_engine_runs_from_the_unpacked_wheel(dists, tmp_path):
    wheel, _, _ = dists
    site = str(tmp_path / "site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    run_dir = tmp_path / "run"  # outside the checkout: the editable install must not be what runs
    run_dir.mkdir()
    env = _python_env(site)

    out = subprocess.run([sys.executable, "-c", _HELP_SCRIPT, site], capture_output=True, text=True,
                         cwd=str(run_dir), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["file"].startswith(site), "cryoflex_scipion came from %s, not the wheel" % result["file"]
    assert not result["outside"], "modules imported from outside the wheel: %s" % result["outside"]
    engine_modules = [f for f in _source_files() if f.startswith(PACKAGE + "/engine/") and f.endswith(".py")
                      and f != PACKAGE + "/engine/__main__.py"]
    assert len(result["imported"]) == len(engine_modules), sorted(result["imported"])
    from cryoflex_scipion.engine.commands import COMMANDS
    helps = result["helps"]
    for name in COMMANDS:
        assert name + " --help" in helps, name
    for action in ("defmap predict", "defmap train", "deephemnma train", "deephemnma predict", "cryotrans train"):
        assert action + " --help" in helps, sorted(helps)
    for argv, (code, text) in helps.items():
        assert code in (0, None) and text.startswith("usage:"), (argv, code, text)

    # A tiny HEMNMA run: C-alpha modes of the shipped AdK model, 4 simulated particles of 32 px.
    def engine(*args):
        res = subprocess.run([sys.executable, "-m", "cryoflex_scipion.engine"] + [str(a) for a in args],
                             capture_output=True, text=True, cwd=str(run_dir), env=env)
        assert res.returncode == 0, (args[0], res.stderr[-3000:])
        return res

    import numpy as np
    from cryoflex_scipion.engine.core.outputs import SUMMARY, Simulate
    from cryoflex_scipion.engine.hemnma import outputs as hemnma_out
    from cryoflex_scipion.engine.nma import outputs as nma_out
    pdb = os.path.join(site, PACKAGE, "data", "adk_1ake_A.pdb")
    engine("nma", "--atoms", pdb, "--selection", "name CA", "-o", run_dir / "nma", "-n", 8)
    modes = np.load(str(run_dir / "nma" / nma_out.MODES))
    assert modes.shape == (8, 214, 3)
    np.save(str(run_dir / "modes_7_8.npy"), modes[6:8])
    engine("simulate", "--model", run_dir / "nma" / nma_out.ATOMS, "--selection", "all", "-o", run_dir / "sim",
           "-n", 4, "--box", 32, "--apix", 4.0, "--no-ctf", "--modes", run_dir / "modes_7_8.npy",
           "--amplitude-std", 100, "--snr", 10, "--device", "cpu")
    engine("hemnma", "--particles", run_dir / "sim" / Simulate.STAR, "--atoms", run_dir / "nma" / nma_out.ATOMS,
           "--modes", run_dir / "modes_7_8.npy", "-o", run_dir / "hemnma", "--ctf-mode", "none", "--size", 32,
           "--search-size", 32, "--coarse-size", 0, "--angular-step", 30, "--starts", 1, "--search-levels", 1,
           "--coarse-iterations", 2, "--fine-iterations", 2, "--max-shift", 0, "--batch-size", 4,
           "--device", "cpu")
    folder = run_dir / "hemnma"
    for name in hemnma_out.FILES.values():
        assert (folder / name).exists(), name
    with np.load(str(folder / hemnma_out.RESULTS)) as res:
        assert res["amplitudes"].shape == (4, 2) and np.isfinite(res["amplitudes"]).all()
        assert np.isfinite(res["cost"]).all()
    summary = json.load(open(str(folder / SUMMARY)))
    assert summary["n_particles"] == 4
