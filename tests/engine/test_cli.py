"""The engine command line: simulate -> reconstruct, summaries, and clear errors on bad input."""
import json
import os
import subprocess
import sys

import numpy as np

import cryoflex_scipion
from cryoflex_scipion.engine.__main__ import main
from cryoflex_scipion.engine.core.io.mrc import read_map
from cryoflex_scipion.engine.core.io.particles import read_particles

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cryoflex_scipion.engine", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("simulate", "reconstruct", "atoms"):
        assert command in out.stdout


def test_simulate_then_reconstruct(tmp_path):
    sim = str(tmp_path / "sim")
    assert main(["simulate", "--model", MODEL, "-o", sim, "-n", "1000", "--box", "40", "--apix", "3.0",
                 "--max-shift", "3", "--snr", "1.0", "--seed", "3", "--batch-size", "128"]) == 0
    summary = json.load(open(os.path.join(sim, "summary.json")))
    assert summary["n_particles"] == 1000 and abs(summary["snr_measured_mean"] - 1.0) < 0.1
    table = read_particles(os.path.join(sim, "particles.star"))
    truth = np.genfromtxt(os.path.join(sim, "ground_truth.csv"), delimiter=",", names=True)
    assert np.allclose(table.euler[:, 1], truth["tilt"]) and np.allclose(table.origin_A[:, 0], truth["originX_A"])
    ref, info = read_map(os.path.join(sim, "reference.mrc"))
    assert ref.shape == (40, 40, 40)
    # The reference map overlays the input model: its centre is the model's centre.
    centre = np.array(info.origin) + 20 * 3.0
    assert np.allclose(centre, summary["model_center_A"], atol=1e-3)

    rec = str(tmp_path / "rec")
    assert main(["reconstruct", "--particles", os.path.join(sim, "particles.star"), "-o", rec,
                 "--reference", os.path.join(sim, "reference.mrc"), "--batch-size", "200"]) == 0
    summary = json.load(open(os.path.join(rec, "summary.json")))
    assert summary["particles_per_half"] == [500, 500]
    # 1000 particles at SNR 1 on a 40-px box (Nyquist 6 A); atoms are 3-A Gaussians (one pixel),
    # which damp the signal beyond about 8 A.
    assert summary["reference_resolution_0.5_A"] < 10.0
    assert summary["resolution_0.143_A"] < 10.0
    for name in ("map.mrc", "half1.mrc", "half2.mrc", "fsc.csv"):
        assert os.path.exists(os.path.join(rec, name))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "cryoflex_scipion.engine"] + list(args), capture_output=True,
                          text=True)


def test_bad_inputs_give_messages_not_tracebacks(tmp_path, data_path):
    out = _run("simulate", "--model", str(tmp_path / "missing.pdb"), "-o", str(tmp_path / "x"))
    assert out.returncode == 2 and "missing.pdb" in out.stderr and "Traceback" not in out.stderr
    out = _run("simulate", "--model", MODEL, "-o", str(tmp_path / "x"), "--defocus-min", "9", "--defocus-max", "1")
    assert out.returncode == 2 and "defocus" in out.stderr
    out = _run("reconstruct", "--particles", data_path("empiar_10076_7.star"), "-o", str(tmp_path / "r"))
    assert out.returncode == 2 and "no angles" in out.stderr and "Traceback" not in out.stderr
    star = tmp_path / "p.star"
    star.write_text(open(data_path("relion31.star")).read().replace("relion31.mrcs", "gone.mrcs"))
    out = _run("reconstruct", "--particles", str(star), "-o", str(tmp_path / "r"))
    assert out.returncode == 2 and "gone.mrcs" in out.stderr and "Traceback" not in out.stderr


def test_atoms_command(tmp_path):
    out = str(tmp_path / "adk.npz")
    assert main(["atoms", MODEL, "-o", out, "--selection", "name CA"]) == 0
    with np.load(out) as d:
        assert d["coords"].shape == (214, 3) and set(d["names"]) == {"CA"}


def test_library_code_never_imports_the_command_line():
    """Only the commands (argparse glue) and the entry point may import engine/cli.py."""
    import ast
    engine = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "engine")
    offenders = []
    for folder, _, files in os.walk(engine):
        rel = os.path.relpath(folder, engine)
        if rel.split(os.sep)[0] == "commands":
            continue
        for name in files:
            if not name.endswith(".py") or (rel == "." and name in ("cli.py", "__main__.py")):
                continue
            path = os.path.join(folder, name)
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] == "cli":
                    offenders.append(os.path.relpath(path, engine))
    assert offenders == []


def test_number_lists_are_parsed_and_refused_one_way():
    import pytest
    from cryoflex_scipion.engine.core.numbers import parse_number_list
    assert parse_number_list("7-9, 12") == [7, 8, 9, 12]
    assert parse_number_list(" ") is None and parse_number_list(None) is None
    for bad, message in (("abc", "use numbers and ranges"), ("9-7", "reversed"), ("7,7", "twice"), (",", "no number")):
        with pytest.raises(ValueError, match=message):
            parse_number_list(bad, "mode list")
