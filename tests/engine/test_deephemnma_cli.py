"""DeepHEMNMA command line: simulate -> train -> predict (tiny network and images), merge with labelled
particles, training from a labelled STAR, and bad inputs (clear one-line errors, exit status 2)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.__main__ import main
from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.atoms import read_atoms
from cryoflex_scipion.engine.core.io.particles import read_particles
from cryoflex_scipion.engine.deephemnma.model_file import model_metadata
from cryoflex_scipion.engine.nma.elastic import compute_modes

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
TINY = ["--blocks", "1,1", "--width", "4", "--features", "16", "--hidden", "16,8", "--batch-size", "16",
        "--device", "cpu", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _simulate(folder, n, box, apix, seed=0):
    pdb = os.path.join(DATA, "adk_closed.pdb")
    model = read_atoms(pdb, "name CA")
    modes = os.path.join(os.path.dirname(folder), "modes.npy")
    if not os.path.exists(modes):
        np.save(modes, compute_modes(model.coords, 8, "ANM", 12.0).vectors[6:8])
    assert main(["simulate", "--model", pdb, "--selection", "name CA", "-o", folder,
                 "-n", str(n), "--box", str(box), "--apix", str(apix), "--snr", "1", "--no-ctf", "--modes", modes,
                 "--amplitude-range", "30", "--max-shift", "2", "--device", "cpu", "--seed", str(seed)]) == 0
    return folder


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """40 particles of 32 px at 2.5 A/px with modes 7 and 8 (ground_truth.csv amplitude_1, amplitude_2)."""
    return _simulate(str(tmp_path_factory.mktemp("dh") / "sim"), 40, 32, 2.5)


def _train_args(sim, out, epochs=2):
    return ["deephemnma", "train", "--particles", os.path.join(sim, "particles.star"), "--labels-csv",
            os.path.join(sim, "ground_truth.csv"), "--modes-list", "7-8", "--size", "24", "--epochs", str(epochs),
            "--val-count", "8", "--reference", "adk CA, ANM 7-8", "-o", out] + TINY


@pytest.fixture(scope="module")
def trained(sim, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dh_train") / "train")
    assert main(_train_args(sim, out)) == 0
    return out


def _fails(argv, capsys, *messages):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and len(err.strip().splitlines()) == 1, err
    for m in messages:
        assert m in err, err
    return err


def test_train_outputs(trained):
    for name in ("model.pt", "checkpoint.pt", "curves.csv", "curves.json", "summary.json", "training_set.npz"):
        assert os.path.exists(os.path.join(trained, name)), name
    meta = model_metadata(os.path.join(trained, "model.pt"))
    assert meta["mode_numbers"] == [7, 8] and meta["n_modes"] == 2 and meta["working_size"] == 24
    assert meta["input_box"] == 32 and meta["input_apix"] == pytest.approx(2.5)
    assert meta["working_apix"] == pytest.approx(2.5 * 32 / 24) and meta["reference"] == "adk CA, ANM 7-8"
    assert meta["targets"] == ["amplitudes", "quaternion", "shifts"] and meta["network"]["arch"] == "shared"
    assert set(meta["labels"]) == {"amplitude_mean", "amplitude_std", "shift_scale_A"}
    assert meta["training"]["n_train"] == 32 and meta["training"]["n_validation"] == 8
    assert "val_angle_deg" in meta["validation"]
    summary = json.load(open(os.path.join(trained, "summary.json")))
    assert summary["epochs"] == 2 and summary["modes"] == [7, 8]
    curve = open(os.path.join(trained, "curves.csv")).read().splitlines()
    assert curve[0].startswith("epoch,lr,train_loss") and len(curve) == 3


def test_rerun_resumes_or_trains_again(sim, trained, tmp_path, capsys):
    """Rerunning 'deephemnma train' into a folder with a checkpoint: the same inputs and settings resume
    (no epoch trained); another number of epochs is refused with a one-line message naming what differs,
    and with --overwrite trains from scratch (the old checkpoint kept as checkpoint.pt.stale) rather than
    returning the old network."""
    out = str(tmp_path / "train")
    shutil.copytree(trained, out)
    capsys.readouterr()
    assert main(_train_args(sim, out)) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.load(open(os.path.join(out, "summary.json")))["epochs"] == 2
    with pytest.raises(SystemExit) as stop:
        main(_train_args(sim, out, epochs=3))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "differs in: training.epochs" in err and "\n" not in err and err.startswith("ERROR: ")
    assert json.load(open(os.path.join(out, "summary.json")))["epochs"] == 2  # nothing of the earlier job lost
    assert main(_train_args(sim, out, epochs=3) + ["--overwrite"]) == 0
    log = capsys.readouterr().out
    assert "differs in: training.epochs" in log and "starting from scratch" in log and "resumed" not in log
    assert json.load(open(os.path.join(out, "summary.json")))["epochs"] == 3
    assert os.path.exists(os.path.join(out, "checkpoint.pt.stale"))


def test_predict_round_trip_and_merge(sim, trained, tmp_path):
    star = os.path.join(sim, "particles.star")
    out = str(tmp_path / "pred")
    assert main(["deephemnma", "predict", "--model", os.path.join(trained, "model.pt"), "--particles", star,
                 "--modes-list", "7,8", "-o", out, "--device", "cpu", "--batch-size", "16"]) == 0
    table = read_particles(os.path.join(out, "particles.star"))
    res = np.load(os.path.join(out, "results.npz"))
    assert len(table) == 40 and set(res.files) >= {"euler", "origin_A", "amplitudes", "quaternion", "mode_numbers"}
    assert np.array_equal(table.euler, res["euler"]) and np.array_equal(table.origin_A, res["origin_A"])
    assert np.array_equal(np.stack([table.extra["cryoflexAmplitude7"], table.extra["cryoflexAmplitude8"]], -1)
                          .astype(float), res["amplitudes"])
    assert g.angular_distance(g.euler_to_matrix(res["euler"]), g.quaternion_to_matrix(res["quaternion"])).max() < 1e-6
    assert table.ctf is None and (np.asarray(table.extra["cryoflexPredicted"]).astype(int) == 1).all()
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["n_particles"] == 40 and summary["particles_per_second"] > 0

    # labelled STAR for the first 10 particles (e.g. HEMNMA's): merged particles keep those values
    labelled = read_particles(star).subset(np.arange(10))
    labelled.image_file = np.full(10, os.path.join(sim, "particles.mrcs"))
    labelled.euler = np.tile([10.0, 20.0, 30.0], (10, 1))
    labelled.origin_A = np.tile([0.5, -0.5], (10, 1))
    labelled.extra["cryoflexAmplitude7"] = np.arange(10.0)
    labelled.extra["cryoflexAmplitude8"] = -np.arange(10.0)
    labelled.to_star(str(tmp_path / "labelled.star"))
    merged = str(tmp_path / "merged")
    assert main(["deephemnma", "predict", "--model", os.path.join(trained, "model.pt"), "--particles", star,
                 "--merge-with", str(tmp_path / "labelled.star"), "-o", merged, "--device", "cpu"]) == 0
    mres = np.load(os.path.join(merged, "results.npz"))
    assert np.allclose(mres["euler"][:10], [10, 20, 30]) and np.allclose(mres["origin_A"][:10], [0.5, -0.5])
    assert np.allclose(mres["amplitudes"][:10, 0], np.arange(10)) and not mres["predicted"][:10].any()
    assert np.allclose(mres["amplitudes"][10:], res["amplitudes"][10:]) and mres["predicted"][10:].all()
    assert json.load(open(os.path.join(merged, "summary.json")))["n_merged"] == 10

    # the prediction STAR carries labels: it trains directly (HEMNMA-output style input)
    again = str(tmp_path / "again")
    assert main(["deephemnma", "train", "--particles", os.path.join(out, "particles.star"), "--size", "24",
                 "--epochs", "1", "--arch", "separate", "-o", again] + TINY) == 0
    assert model_metadata(os.path.join(again, "model.pt"))["network"]["arch"] == "separate"


def test_bad_inputs(sim, trained, tmp_path, capsys):
    star = os.path.join(sim, "particles.star")
    model = os.path.join(trained, "model.pt")
    out = str(tmp_path / "x")
    # training particles without labels
    _fails(["deephemnma", "train", "--particles", star, "-o", out] + TINY, capsys, "no cryoflexAmplitude",
           "HEMNMA")
    # labels with NaN
    truth = np.genfromtxt(os.path.join(sim, "ground_truth.csv"), delimiter=",", names=True)
    amps = np.stack([truth["amplitude_1"], truth["amplitude_2"]], -1)
    amps[3, 1] = np.nan
    euler = np.stack([truth["rot"], truth["tilt"], truth["psi"]], -1)
    origin = np.stack([truth["originX_A"], truth["originY_A"]], -1)
    np.savez(tmp_path / "nan.npz", euler=euler, origin_A=origin, amplitudes=amps, mode_numbers=[7, 8])
    _fails(["deephemnma", "train", "--particles", star, "--labels-npz", str(tmp_path / "nan.npz"), "-o", out] + TINY,
           capsys, "NaN", "particle 4")
    # labels for another number of particles
    np.savez(tmp_path / "short.npz", euler=euler[:5], origin_A=origin[:5], amplitudes=np.nan_to_num(amps[:5]))
    _fails(["deephemnma", "train", "--particles", star, "--labels-npz", str(tmp_path / "short.npz"), "-o", out]
           + TINY, capsys, "5 particles", "40")
    # empty particle set
    (tmp_path / "empty.star").write_text(
        "data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n_rlnImageSize #3\n1 2.5 32\n\n"
        "data_particles\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n")
    _fails(["deephemnma", "predict", "--model", model, "--particles", str(tmp_path / "empty.star"), "-o", out,
            "--device", "cpu"], capsys, "no particles")
    # a model trained on other modes than requested
    _fails(["deephemnma", "predict", "--model", model, "--particles", star, "--modes-list", "7-9", "-o", out,
            "--device", "cpu"], capsys, "trained on modes [7, 8]", "[7, 8, 9]")
    # prediction images of another size / field of view than the training images
    other = _simulate(str(tmp_path / "sim40"), 4, 40, 2.5, seed=1)
    _fails(["deephemnma", "predict", "--model", model, "--particles", os.path.join(other, "particles.star"), "-o",
            out, "--device", "cpu"], capsys, "40 px at 2.5 A/px", "32 px at 2.5 A/px", "pixel size x box")
    # a missing model file
    _fails(["deephemnma", "predict", "--model", str(tmp_path / "none.pt"), "--particles", star, "-o", out,
            "--device", "cpu"], capsys, "not found")


def test_same_field_of_view_other_box_is_accepted(trained, tmp_path):
    """64 px at 1.25 A/px shows the same 80 A as the training's 32 px at 2.5 A/px: both are cropped to
    the model's 24 px at 3.33 A/px, so the prediction runs."""
    other = _simulate(str(tmp_path / "sim64"), 4, 64, 1.25, seed=2)
    assert main(["deephemnma", "predict", "--model", os.path.join(trained, "model.pt"), "--particles",
                 os.path.join(other, "particles.star"), "-o", str(tmp_path / "p"), "--device", "cpu"]) == 0
