"""DEFMap engine: network size, grids and origins, resampling, sub-voxels, augmentation, labels, model files."""
import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.defmap.grid import Grid, gaussian_lowpass, nearest_resample, resampled_grid
from cryoflex_scipion.engine.defmap.labels import bfactor_rmsf, rmsf_bfactor, trajectory_rmsf, voxel_labels
from cryoflex_scipion.engine.defmap.model_file import ModelFileError, load_model, model_metadata, save_model
from cryoflex_scipion.engine.defmap.network import N_PARAMETERS, DefmapNet, count_parameters
from cryoflex_scipion.engine.defmap.predict import prediction_voxels, sample_at_atoms, sparse_map
from cryoflex_scipion.engine.defmap.preprocess import MapError, kept_voxels, prepare_map
from cryoflex_scipion.engine.defmap.simulate import atom_sigmas, grid_around, simulate_map
from cryoflex_scipion.engine.defmap.subvoxels import ROTATIONS, SubvoxelSource, rotate_subvoxels
from cryoflex_scipion.engine.defmap.train import TrainingItem, TrainingSet


def test_network_has_the_papers_parameter_count_and_keras_same_padding():
    net = DefmapNet()
    assert count_parameters(net) == N_PARAMETERS == 5_774_785
    # The explicit (1, 2) zero pad is Keras/torch 'same' for kernel 4.
    conv = net.features[1]
    x = torch.randn(2, 1, 10, 10, 10)
    with pytest.warns(UserWarning):
        same = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding="same")
    assert torch.allclose(net.features[1](net.features[0](x)), same, atol=1e-6)
    sizes = []
    h = x
    for layer in net.features:
        h = layer(h)
        if isinstance(layer, torch.nn.MaxPool3d):
            sizes.append(h.shape[-1])
    assert sizes == [5, 3, 2]
    net.eval()
    assert net(torch.randn(3, 10, 10, 10)).shape == (3,)


def test_grid_index_and_physical_positions_respect_the_origin():
    grid = Grid((20, 30, 40), 1.5, (100.0, -20.0, 7.5))
    xyz = np.array([[100.0, -20.0, 7.5], [101.5, -17.0, 7.5 + 1.5 * 19]])
    assert np.allclose(grid.xyz_to_index(xyz), [[0, 0, 0], [19, 2, 1]])
    assert np.allclose(grid.index_to_xyz([[19, 2, 1]]), xyz[1:])
    # the original's rule round(xyz / apix) ignores the origin: it would be far outside this box
    assert not grid.contains(np.round(xyz[1:] / 1.5).astype(int)[:, ::-1]).any()
    assert np.array_equal(grid.nearest_index([[100.74, -20.74, 7.5]]), [[0, 0, 0]])
    assert np.array_equal(grid.nearest_index([[100.75, -19.25, 7.5]]), [[0, 1, 1]])


def _blob_map(shape_zyx, apix, origin, centre_xyz, sigma=2.0):
    grid = Grid(shape_zyx, apix, origin)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape_zyx], indexing="ij"), -1)
    d2 = ((grid.index_to_xyz(idx) - centre_xyz) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma ** 2)).astype(np.float32), grid


def _centroid(values, grid):
    v = np.asarray(values, np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    return (grid.index_to_xyz(idx) * v[..., None]).reshape(-1, 3).sum(0) / v.sum()


@pytest.mark.parametrize("apix", [1.1, 2.1])
def test_resampling_keeps_physical_positions_and_origin(apix):
    """A blob at a known physical position in a non-cubic map with a non-zero origin stays there
    after low-pass + resampling to 1.5 A (down- and up-sampling)."""
    origin = (123.4, -56.7, 89.0)
    shape = (int(40 * 1.1 / apix), int(52 * 1.1 / apix), int(36 * 1.1 / apix))
    centre = np.array([origin[0] + 21.3, origin[1] + 30.2, origin[2] + 19.7])
    volume, grid = _blob_map(shape, apix, origin, centre)
    prepared = prepare_map(volume, apix, origin, 5.0)
    assert prepared.grid.apix == 1.5 and prepared.grid.origin == tuple(origin)
    assert prepared.grid.shape == resampled_grid(grid, 1.5).shape
    for n_new, n_old in zip(prepared.grid.shape, shape):
        assert (n_new - 1) * 1.5 <= (n_old - 1) * apix < n_new * 1.5
    z = prepared.values.numpy()   # (v - box mean)+ / box std: symmetric about the blob centre
    assert np.abs(_centroid(z, prepared.grid) - centre).max() < 0.05
    peak = np.unravel_index(np.argmax(z), z.shape)
    assert np.abs(prepared.grid.index_to_xyz(peak) - centre).max() <= 0.75 + 1e-9
    assert z.min() == 0 and (z == 0).mean() > 0.5   # negatives (solvent) clamped to 0


def test_gaussian_lowpass_on_a_non_cubic_box_has_the_expected_width():
    volume = torch.zeros(31, 41, 37, dtype=torch.float64)
    volume[15, 20, 18] = 1.0
    out = gaussian_lowpass(volume, 6.0, 1.0).numpy()
    assert abs(out.sum() - 1.0) < 1e-4
    var_x = (out.sum((0, 1)) * (np.arange(37) - 18) ** 2).sum()
    assert var_x == pytest.approx((6.0 / (2 * np.pi)) ** 2 + 1 / 12, rel=0.1)


def test_batched_subvoxels_equal_a_naive_loop():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((13, 17, 11)).astype(np.float32)
    centres = np.concatenate([rng.integers(0, [13, 17, 11], (50, 3)), [[0, 0, 0], [12, 16, 10], [5, 0, 10]]])
    source = SubvoxelSource(values, box=10)
    got = torch.cat([b for _, _, b in source.batches(centres, 7)]).numpy()
    for n, (z, y, x) in enumerate(centres):
        naive = np.zeros((10, 10, 10), np.float32)
        for a in range(10):
            for b in range(10):
                for c in range(10):
                    i, j, k = z - 5 + a, y - 5 + b, x - 5 + c   # the centre voxel is box index 5
                    if 0 <= i < 13 and 0 <= j < 17 and 0 <= k < 11:
                        naive[a, b, c] = values[i, j, k]
        assert np.array_equal(got[n], naive)
        assert got[n][5, 5, 5] == values[z, y, x]


def test_rotation_augmentation_is_the_subvoxel_of_the_rotated_map_and_keeps_labels():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((16, 16, 16)).astype(np.float32)
    centre = np.array([[6, 9, 7]])
    larger = SubvoxelSource(values, box=11).extract(centre)
    n = len(ROTATIONS)
    turned = rotate_subvoxels(larger.expand(n, -1, -1, -1), torch.arange(n)).numpy()
    marker = np.zeros_like(values)
    marker[tuple(centre[0])] = 1
    for c, (k, dims) in enumerate(ROTATIONS):
        axes = tuple(d - 1 for d in dims)
        rot_values = np.rot90(values, k, axes).copy()
        new_centre = np.argwhere(np.rot90(marker, k, axes))   # where the labelled voxel went
        expected = SubvoxelSource(rot_values, box=10).extract(new_centre).numpy()[0]
        assert np.array_equal(turned[c], expected)
        assert turned[c][5, 5, 5] == values[tuple(centre[0])]
    item = TrainingItem("m", SubvoxelSource(values, box=11), np.repeat(centre, 30, 0), rng.standard_normal(30))
    tset = TrainingSet([item], val_fraction=0.0)
    plain_x, plain_y = tset.batch(np.arange(30))
    rot_x, rot_y = tset.batch(np.arange(30), np.arange(30) % n)
    assert torch.equal(plain_y, rot_y)
    assert torch.equal(rot_x[:, 5, 5, 5], plain_x[:, 5, 5, 5])


def test_bfactor_rmsf_formula_and_trajectory_rmsf():
    b = np.array([8 * np.pi ** 2 / 3, 30.0, 0.0])
    rmsf = bfactor_rmsf(b)
    assert rmsf[0] == pytest.approx(1.0, abs=1e-12)
    assert rmsf[1] == pytest.approx(np.sqrt(3 * 30.0 / (8 * np.pi ** 2)), abs=1e-12)
    assert np.isnan(rmsf[2])
    assert np.allclose(rmsf_bfactor(rmsf[:2]), b[:2])
    # Trajectory: random rigid motions of a structure whose atoms fluctuate with known spread.
    rng = np.random.default_rng(2)
    ref = rng.uniform(-15, 15, (40, 3))
    spread = np.linspace(0.05, 1.0, 40)
    spread[:20] = 0.05  # the "C-alpha" atoms used for superposition barely move
    frames = []
    for _ in range(400):
        q = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        q *= np.sign(np.linalg.det(q))
        frames.append((ref + rng.standard_normal((40, 3)) * spread[:, None]) @ q.T + rng.normal(0, 10, 3))
    mask = np.arange(40) < 20
    got = trajectory_rmsf(np.array(frames), mask)
    assert np.allclose(got[20:], np.sqrt(3) * spread[20:], rtol=0.1, atol=0.03)


def test_voxel_labels_nearest_atom_and_origin():
    grid = Grid((10, 12, 14), 1.5, (50.0, 60.0, 70.0))
    coords = np.array([[53.1, 63.0, 74.4], [53.6, 63.0, 74.4], [60.0, 70.0, 80.0]])
    rmsf = np.array([0.5, 2.0, 1.0])
    idx, log_rmsf, atom = voxel_labels(grid, coords, rmsf)
    assert {tuple(i) for i in idx} == {tuple(i) for i in grid.nearest_index(coords)}
    for i, lab, a in zip(idx, log_rmsf, atom):
        d = np.linalg.norm(coords - grid.index_to_xyz(i), axis=1)
        assert a == np.argmin(d) and lab == pytest.approx(np.log10(rmsf[a]))
    # the same atoms and map moved together give the same voxels
    moved = Grid(grid.shape, 1.5, (250.0, -40.0, 0.0))
    idx2, _, _ = voxel_labels(moved, coords + np.array([200.0, -100.0, -70.0]), rmsf)
    assert np.array_equal(np.sort(idx, 0), np.sort(idx2, 0))
    near, _, atom_near = voxel_labels(grid, coords, rmsf, max_distance=2.0)
    d = np.linalg.norm(grid.index_to_xyz(near)[:, None] - coords[None], axis=-1)
    assert d.min(1).max() <= 2.0 and len(near) > len(idx)
    assert np.array_equal(atom_near, d.argmin(1))
    # per-atom lookup uses the same voxels
    values = np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape)
    assert np.array_equal(sample_at_atoms(values, grid, coords), values[tuple(grid.nearest_index(coords).T)])


def test_simulated_map_mass_and_blur_from_bfactors():
    coords = np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0]])
    grid = grid_around(coords, 1.0, 10.0)
    vol = simulate_map(coords, [5.0, 120.0], grid, 5.0, weights=[6.0, 6.0])
    assert vol.sum(dtype=np.float64) * grid.apix ** 3 == pytest.approx(12.0, rel=2e-4)   # +-4 sigma windows
    peaks = [vol[tuple(grid.nearest_index(c[None])[0])] for c in coords]
    sig = atom_sigmas([5.0, 120.0], 5.0)
    assert peaks[0] > peaks[1] and peaks[0] / peaks[1] == pytest.approx((sig[1] / sig[0]) ** 3, rel=0.1)


def test_prediction_voxels_threshold_and_sparse_map():
    grid = Grid((8, 9, 10), 1.5, (0.0, 0.0, 0.0))
    kept = np.array([[1, 1, 1], [0, 5, 5]])
    cen = prediction_voxels(grid, kept, np.array([[3.2, 3.2, 3.2], [-50.0, 0, 0]]))
    assert len(cen) == 2 + 8 and grid.contains(cen).all()
    dense = sparse_map(grid.shape, cen, np.ones(len(cen)))
    assert dense.sum() == len(cen)
    back = nearest_resample(dense, grid, Grid((16, 18, 20), 0.75, (0.0, 0.0, 0.0)))
    assert set(np.unique(back)) == {0.0, 1.0}
    with pytest.raises(MapError, match="pixel size"):
        prepare_map(np.ones((5, 5, 5)), 0.0, (0, 0, 0), 5.0)
    with pytest.raises(MapError, match="NaN"):
        prepare_map(np.full((5, 5, 5), np.nan), 1.0, (0, 0, 0), 5.0)
    vol = np.zeros((20, 20, 20), np.float32)
    vol[10, 10, 10] = 1
    prepared = prepare_map(vol, 1.5, (0, 0, 0), 5.0)
    assert len(kept_voxels(prepared)) > 0 and len(kept_voxels(prepared, 1e6)) == 0


def test_model_file_round_trip_and_resolution_check(tmp_path):
    net = DefmapNet()
    path = str(tmp_path / "m.pt")
    save_model(path, net, {"resolution": 5.0, "label_mean": 0.1, "label_std": 0.2, "training_set": ["a"]})
    loaded, meta = load_model(path, resolution=5.0)
    assert meta["training_set"] == ["a"] and meta["n_parameters"] == N_PARAMETERS
    x = torch.randn(2, 10, 10, 10)
    net.eval()
    assert torch.equal(loaded(x), net(x))
    assert model_metadata(path)["resolution"] == 5.0
    with pytest.raises(ModelFileError, match="trained at 5 A but 7 A"):
        load_model(path, resolution=7.0)
    torch.save({"something": 1}, str(tmp_path / "other.pt"))
    with pytest.raises(ModelFileError, match="not a CryoFlex DEFMap model"):
        load_model(str(tmp_path / "other.pt"))


def test_trilinear_atom_lookup_and_contour_threshold():
    grid = Grid((12, 14, 16), 1.5, (-7.0, 3.0, 11.0))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    xyz = grid.index_to_xyz(idx)
    linear = (2 * xyz[..., 0] - xyz[..., 1] + 0.5 * xyz[..., 2]).astype(np.float64)
    rng = np.random.default_rng(3)
    atoms = grid.index_to_xyz(rng.uniform(1, 10, (20, 3)))
    expected = 2 * atoms[:, 0] - atoms[:, 1] + 0.5 * atoms[:, 2]
    assert np.allclose(sample_at_atoms(linear, grid, atoms, mode="trilinear"), expected)
    # unknown corners are left out and the weights renormalised: a constant stays constant
    known = rng.uniform(size=grid.shape) > 0.3
    got = sample_at_atoms(np.full(grid.shape, 2.5), grid, atoms, known, mode="trilinear")
    assert np.allclose(got[np.isfinite(got)], 2.5) and np.isfinite(got).mean() > 0.9
    # a contour in input units selects the voxels where the (unfiltered) input is above it
    vol = np.zeros((20, 22, 24), np.float32)
    vol[8:12, 9:13, 10:14] = 3.0
    prepared = prepare_map(vol, 1.5, (0, 0, 0), 5.0, contour=1.0)
    kept = kept_voxels(prepared)
    assert {tuple(k) for k in kept} == {(z, y, x) for z in range(8, 12) for y in range(9, 13) for x in range(10, 14)}
