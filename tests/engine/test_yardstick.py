"""AdK-1D yardstick: build, ground truth (frames, LID-NMP distances, maps in the particles' frame), SNR,
and one-line errors on bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.__main__ import main
from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.ctf import CTFParams, compute_ctf
from cryoflex_scipion.engine.core.fourier import fft_centered, ifft_centered
from cryoflex_scipion.engine.core.io.mrc import open_stack, read_map
from cryoflex_scipion.engine.core.metrics import au_fsc, fsc_curves, image_correlation
from cryoflex_scipion.engine.core.projection import FourierProjector, project_gaussians
from cryoflex_scipion.engine.core.runtime import EngineInputError
from cryoflex_scipion.engine.yardstick import (gt_map_file, latent_correlations, lid_nmp_distance, load_dataset,
                                               load_trajectory, parse_frames, score_volumes)

PER_FRAME = 8
BOX, APIX, SNR = 48, 2.0, 0.5     # box SNR 0.5 (--snr-convention box): the stack can be checked per image


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
    out = str(tmp_path_factory.mktemp("adk1d") / "adk1d")
    traj, ref = os.path.join(here, "adk_dims_subset.npz"), os.path.join(here, "adk_dims_frame000_heavy.npz")
    code = main(["yardstick", "build", "--trajectory", traj, "--reference", ref, "-o", out, "--frames", "0-2",
                 "--particles-per-frame", str(PER_FRAME), "--box", str(BOX), "--apix", str(APIX), "--snr", str(SNR),
                 "--snr-convention", "box", "--device", "cpu", "--batch-size", "10", "--seed", "3"])
    assert code == 0
    return out, traj, ref


def test_ground_truth_frames_and_distances(built):
    out, traj_path, ref = built
    data = load_dataset(out)
    truth = data.ground_truth()
    with np.load(traj_path) as t:
        stored = t["lid_nmp_A"].astype(np.float64)
        coords = t["coords"].astype(np.float64)
        names, resids = t["names"], t["resids"]
    assert np.array_equal(np.bincount(truth["frame"]), [PER_FRAME] * 3)
    assert not np.array_equal(truth["frame"], np.sort(truth["frame"]))          # shuffled
    assert np.allclose(truth["lid_nmp_A"], stored[truth["frame"]], atol=1e-5)
    # the stored distances are the C-alpha centres of mass of LID (122-159) and NMP (30-59)
    assert np.allclose(lid_nmp_distance(coords, names, resids), stored, atol=1e-3)
    assert stored[0] == pytest.approx(19.765, abs=1e-3) and stored[-1] == pytest.approx(35.783, abs=1e-3)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["n_particles"] == 3 * PER_FRAME and summary["frames"] == [0, 1, 2]
    assert summary["snr"]["box_snr"] == SNR
    assert abs(summary["snr"]["box_snr_measured_mean"] - SNR) / SNR < 0.1
    frames_csv = np.loadtxt(os.path.join(out, "frames.csv"), delimiter=",", skiprows=1)
    assert np.allclose(frames_csv[:, 1], stored[:3], atol=1e-5) and np.array_equal(frames_csv[:, 2], [PER_FRAME] * 3)
    # the heavy-atom trajectory is matched to the reference: frame 0 is the reference model
    traj = load_trajectory(traj_path, ref)
    assert traj.n_atoms == 1656 and np.abs(traj.coords[0] - traj.reference.coords).max() < 1e-3


def test_ground_truth_maps_are_in_the_particles_frame(built):
    """Each frame's map, projected with a particle's true pose, shift and CTF, is that particle's noiseless
    image (rendered independently from the atoms); the noisy stack matches them at the requested SNR."""
    out, _, _ = built
    data = load_dataset(out)
    truth = data.ground_truth()
    gt0, info = read_map(os.path.join(out, gt_map_file(0)))
    assert np.allclose(info.origin, data.map_origin, atol=1e-3) and info.apix == pytest.approx(APIX)
    assert np.allclose(gt0, data.frame_map(0).numpy(), atol=1e-5 * gt0.max())
    ref_map, ref_info = read_map(os.path.join(out, "reference.mrc"))
    assert np.allclose(ref_info.origin, info.origin, atol=1e-3)
    assert au_fsc(fsc_curves(ref_map, gt0)) == pytest.approx(au_fsc(np.ones(BOX // 2)), abs=1e-4)
    assert au_fsc(fsc_curves(read_map(os.path.join(out, gt_map_file(2)))[0], gt0)) < 0.4  # frames differ

    idx = np.arange(len(truth["frame"]))
    rot = torch.as_tensor(g.euler_to_matrix(np.stack([truth["rot"], truth["tilt"], truth["psi"]], -1)))
    shifts = torch.as_tensor(g.origin_to_shift(np.stack([truth["originX_A"], truth["originY_A"]], -1)) / APIX)
    ctf = compute_ctf(CTFParams(defocus_u=truth["defocusU"], defocus_v=truth["defocusV"],
                                defocus_angle=truth["defocusAngle"]), BOX, APIX, n=len(idx), dtype=torch.float64)
    from_maps = torch.zeros(len(idx), BOX, BOX, dtype=torch.float64)
    from_atoms = torch.zeros_like(from_maps)
    for f in range(3):
        sel = np.nonzero(truth["frame"] == f)[0]
        proj = FourierProjector(data.frame_map(f, dtype=torch.float64), APIX)
        from_maps[sel] = proj.project(rot[sel], shifts[sel])
        xyz = torch.as_tensor(data.frame_coords(f) - data.center)
        from_atoms[sel] = project_gaussians(xyz, data.weights, data.sigma, rot[sel], BOX, APIX, shifts_px=shifts[sel])
    clean_maps = ifft_centered(fft_centered(from_maps) * ctf)
    clean_atoms = ifft_centered(fft_centered(from_atoms) * ctf)
    assert image_correlation(clean_maps, clean_atoms).min() > 0.99
    handle, _ = open_stack(os.path.join(out, "particles.mrcs"))
    try:
        images = torch.as_tensor(np.array(handle.data, dtype=np.float64))
    finally:
        handle.close()
    noise = images - clean_atoms
    snr = clean_atoms.var(dim=(1, 2)) / noise.var(dim=(1, 2))
    assert abs(snr.mean().item() - SNR) / SNR < 0.1
    # white noise after the CTF (CryoBench's): the noise spectrum does not vanish at the CTF zeros
    spec = fft_centered(noise).abs()
    assert spec[ctf.abs() < 0.05].mean() > 0.8 * spec[ctf.abs() > 0.9].mean()


def test_scoring_helpers(built):
    out, _, _ = built
    data = load_dataset(out)
    frames = np.array([0, 1, 2, 2])
    vols = [data.frame_map(f) for f in (0, 1, 2)] + [data.frame_map(0)]
    curves, summary = score_volumes(data, frames, vols)
    best = au_fsc(np.ones(BOX // 2))
    assert np.allclose(au_fsc(curves[:3]), best) and au_fsc(curves[3]) < best - 0.05
    assert summary["n"] == 4 and summary["per_label"]["0"]["au_fsc_mean"] == pytest.approx(best)
    rng = np.random.default_rng(0)
    z = np.stack([np.arange(20.0), rng.standard_normal(20) * 0.01], -1) @ np.array([[0.6, 0.8], [-0.8, 0.6]])
    corr = latent_correlations(z, np.arange(20), np.arange(20) * 2.0)
    assert corr["abs_rho_pc1_frame"] == pytest.approx(1.0) and corr["abs_rho_pc1_lid_nmp"] == pytest.approx(1.0)


def test_parse_frames():
    assert parse_frames("all", 5) == [0, 1, 2, 3, 4]
    assert parse_frames("0,2-3", 5) == [0, 2, 3]
    for bad, msg in (("", "empty"), ("7", "does not exist"), ("1,1", "twice"), ("a-b", "use numbers and ranges"),
                     ("3-1", "reversed")):
        with pytest.raises(EngineInputError, match=msg):
            parse_frames(bad, 5)


def _fails(argv, capsys, message, out):
    try:
        code = main(argv)
    except SystemExit as exc:  # fail() in a command; the entry point returns 2 for the errors it prints
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR:") and "\n" not in err and message in err, err
    assert not os.path.exists(os.path.join(out, "particles.mrcs"))   # nothing heavy was started


def test_bad_inputs_fail_on_one_line(data_path, tmp_path, capsys):
    traj, ref = data_path("adk_dims_subset.npz"), data_path("adk_dims_frame000_heavy.npz")
    out = str(tmp_path / "out")
    base = ["yardstick", "build", "--trajectory", traj, "--reference", ref, "-o", out, "--device", "cpu",
            "--particles-per-frame", "2", "--box", "48", "--apix", "2.0"]
    with np.load(traj) as t:
        arrays = {k: t[k] for k in t.files}
    renamed = dict(arrays, names=arrays["names"].copy())
    renamed["names"][5] = "XX"
    np.savez(tmp_path / "renamed.npz", **renamed)
    np.savez(tmp_path / "short.npz", **dict(arrays, coords=arrays["coords"][:, :-1], names=arrays["names"][:-1]))
    np.savez(tmp_path / "nocoords.npz", names=arrays["names"])
    swap = base.index(traj)
    _fails(base[:swap] + [str(tmp_path / "renamed.npz")] + base[swap + 1:], capsys, "atom 6 is 'XX'", out)
    _fails(base[:swap] + [str(tmp_path / "short.npz")] + base[swap + 1:], capsys, "has 1655 atoms per frame", out)
    _fails(base[:swap] + [str(tmp_path / "nocoords.npz")] + base[swap + 1:], capsys, "no 'coords'", out)
    _fails(base + ["--frames", ""], capsys, "frame list is empty", out)
    _fails(base + ["--frames", "5"], capsys, "frame 5 does not exist", out)
    _fails(base + ["--snr", "0"], capsys, "--snr must be positive", out)
    _fails(base + ["--snr", "-0.1"], capsys, "--snr must be positive", out)
    _fails(base + ["--box", "47"], capsys, "even number of pixels", out)
    _fails(base + ["--apix", "0"], capsys, "--apix must be positive", out)
    _fails(base + ["--box", "48", "--apix", "1.0"], capsys, "increase the box or the pixel size", out)
    _fails(base + ["--particles-per-frame", "0"], capsys, "at least 1", out)
    _fails(["yardstick"], capsys, "yardstick needs an action", out)
    # the same through the real command line: exit status 2 and one line
    run = subprocess.run([sys.executable, "-m", "cryoflex_scipion.engine"] + base + ["--snr", "0"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "--snr must be positive" in run.stderr
