"""DEFMap command line: simulate -> train -> predict on a real map, output grids and origins, bad inputs."""
import json
import os

import numpy as np
import pytest

from cryoflex_scipion.engine.__main__ import main
from cryoflex_scipion.engine.core.atoms import read_atoms
from cryoflex_scipion.engine.core.io.mrc import read_map, write_map
from cryoflex_scipion.engine.defmap.model_file import model_metadata, save_model
from cryoflex_scipion.engine.defmap.network import DefmapNet


@pytest.fixture(scope="module")
def model_5A(tmp_path_factory):
    """An untrained network in a 5 A model file (the plumbing does not need trained weights)."""
    import torch
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("model") / "defmap_5A.pt")
    save_model(path, DefmapNet(), {"resolution": 5.0, "label_mean": 0.0, "label_std": 0.1, "training_set": []})
    return path


def _fails(argv, capsys, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_predict_real_map_grids_origin_and_partly_outside_model(data_path, model_5A, tmp_path):
    """EMD-2566 crop (1.34 A/px, 35 x 52 x 47, origin far from 0) with its model moved so that some
    atoms fall outside: outputs on the input grid and the 1.5 A grid keep the origin; every atom
    inside has a prediction; the summary warns about the others."""
    volume, info = read_map(data_path("defmap/2566_3J6B_9.mrc"))
    model = read_atoms(data_path("defmap/3J6B_9_heavy.npz"))
    model.coords = model.coords + np.array([0.0, 0.0, -12.0])   # part of the chain leaves the box (z)
    z_index = (model.coords[:, 2] - info.origin[2]) / info.apix
    model = model.select(z_index < 8)   # fewer atoms (a faster test), about half of them outside
    atoms = str(tmp_path / "moved.npz")
    model.save(atoms)
    out = str(tmp_path / "pred")
    assert main(["defmap", "predict", "--map", data_path("defmap/2566_3J6B_9.mrc"), "--model", model_5A,
                 "--resolution", "5", "--atoms", atoms, "--threshold", "3", "-o", out, "--device", "cpu"]) == 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert 0.5 < summary["atoms_inside_fraction"] < 1 and "outside the map box" in summary["warnings"][0]
    pred, pinfo = read_map(os.path.join(out, "defmap.mrc"))
    pred15, info15 = read_map(os.path.join(out, "defmap_1.5A.mrc"))
    assert pred.shape == volume.shape and np.allclose(pinfo.origin, info.origin) and pinfo.apix == pytest.approx(1.34)
    assert np.allclose(info15.origin, info.origin, atol=1e-3) and info15.apix == pytest.approx(1.5)
    assert summary["grid_1.5A_shape_zyx"] == list(pred15.shape) == [42, 46, 31]
    assert (pred15 != 0).sum() == summary["n_predicted_voxels"] and (pred15 == 0).mean() > 0.5
    rows = np.genfromtxt(os.path.join(out, "atoms.csv"), delimiter=",", names=True, dtype=None, encoding=None)
    index = (model.coords - info.origin) / info.apix
    inside = (index > 0.5).all(1) & (index < np.array(volume.shape[::-1]) - 2).all(1)
    outside = (index < -1.5).any(1)
    assert inside.sum() > 100 and outside.sum() > 20
    assert np.isfinite(rows["pred_log10_rmsf"][inside]).all() and np.isnan(rows["pred_log10_rmsf"][outside]).all()
    # per-atom value = the 1.5 A map at the atom's nearest voxel (origin respected)
    idx = np.floor((model.coords[inside] - info15.origin) / 1.5 + 0.5).astype(int)
    assert np.allclose(rows["pred_log10_rmsf"][inside], pred15[idx[:, 2], idx[:, 1], idx[:, 0]], atol=1e-5)
    residues = np.genfromtxt(os.path.join(out, "residues.csv"), delimiter=",", names=True, dtype=None,
                             encoding=None)
    assert len(residues) == len(set(zip(model.chains, model.resids)))
    assert "dynamics_defmap" in residues.dtype.names and os.path.exists(os.path.join(out, "defmap_atoms.pdb"))


def test_simulate_and_train_commands(data_path, tmp_path):
    sim = str(tmp_path / "1ubi.mrc")
    assert main(["defmap", "simulate-training-map", "--atoms", data_path("defmap/pdb1ubi.pdb"), "--resolution", "5",
                 "--padding", "6", "-o", sim]) == 0
    volume, info = read_map(sim)
    model = read_atoms(data_path("defmap/pdb1ubi.pdb"), "protein and not hydrogen")
    assert info.apix == pytest.approx(1.5) and np.allclose(info.origin, model.coords.min(0) - 6, atol=1e-3)
    # per-atom RMSF from a short "trajectory": frame-to-frame noise, larger on the second half of the atoms
    rng = np.random.default_rng(0)
    spread = np.where(np.arange(len(model)) < len(model) // 2, 0.3, 1.0)[None, :, None]
    np.save(tmp_path / "traj.npy", model.coords[None] + rng.standard_normal((6, len(model), 3)) * spread)
    out = str(tmp_path / "train")
    assert main(["defmap", "train", "--pair", sim, data_path("defmap/pdb1ubi.pdb"),
                 "--pair", sim, data_path("defmap/pdb1ubi.pdb"), str(tmp_path / "traj.npy"),
                 "--resolution", "5", "--epochs", "2", "--samples-per-epoch", "32", "--batch-size", "16",
                 "-o", out, "--device", "cpu"]) == 0
    meta = model_metadata(os.path.join(out, "defmap_model.pt"))
    assert meta["resolution"] == 5.0 and meta["voxel_size"] == 1.5 and meta["training_set"] == ["1ubi.mrc"] * 2
    assert meta["label_std"] > 0 and meta["validation"]["best_epoch"] in (1, 2)
    assert len(open(os.path.join(out, "curve.csv")).read().splitlines()) == 3
    assert not os.path.exists(os.path.join(out, "checkpoint.pt"))  # removed once training is complete


@pytest.mark.filterwarnings("ignore:Data array contains NaN:RuntimeWarning")
def test_bad_inputs_fail_clearly(data_path, model_5A, tmp_path, capsys):
    good_map = data_path("defmap/2566_3J6B_9.mrc")
    volume, info = read_map(good_map)
    atoms = data_path("defmap/3J6B_9_heavy.npz")
    base = ["defmap", "predict", "--model", model_5A, "--resolution", "5", "-o", str(tmp_path / "o")]
    no_apix = str(tmp_path / "no_apix.mrc")
    write_map(no_apix, volume, 0.0, info.origin)
    _fails(base + ["--map", no_apix], capsys, "pixel size")
    nan_map = str(tmp_path / "nan.mrc")
    bad = volume.copy()
    bad[3, 3, 3] = np.nan
    write_map(nan_map, bad, info.apix, info.origin)
    _fails(base + ["--map", nan_map], capsys, "NaN")
    _fails(["defmap", "predict", "--model", model_5A, "--resolution", "7", "-o", str(tmp_path / "o"),
            "--map", good_map], capsys, "trained at 5 A but 7 A was requested")
    far = read_atoms(atoms)
    far.coords = far.coords + 1000.0
    far.save(str(tmp_path / "far.npz"))
    _fails(base + ["--map", good_map, "--atoms", str(tmp_path / "far.npz")], capsys, "no atom of the model lies inside")
    _fails(base + ["--map", good_map, "--threshold", "1000"], capsys, "no voxel is above the threshold")
    _fails(["defmap"], capsys, "defmap needs an action")
