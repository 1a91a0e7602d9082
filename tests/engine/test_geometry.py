"""Euler angles, matrices, quaternions, grids: the conventions of engine.core.geometry."""
import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core import geometry as g


def _random_euler(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-180, 180, n), rng.uniform(1, 179, n), rng.uniform(-180, 180, n)], -1)


def test_euler_matrix_is_xmipp_formula():
    """A = Rz(psi) Ry(tilt) Rz(rot) with Xmipp's passive elementary matrices."""
    rot, tilt, psi = np.deg2rad([30.0, 50.0, -70.0])

    def rz(a):
        return np.array([[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]])

    def ry(b):
        return np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])

    expected = rz(psi) @ ry(tilt) @ rz(rot)
    assert np.allclose(g.euler_to_matrix([30.0, 50.0, -70.0]), expected, atol=1e-14)
    # The projection direction (third row) depends on rot and tilt only.
    assert np.allclose(expected[2], [np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)])


def test_euler_matrix_round_trip():
    e = _random_euler(2000)
    m = g.euler_to_matrix(e)
    assert np.allclose(m @ np.transpose(m, (0, 2, 1)), np.eye(3), atol=1e-13)
    assert np.allclose(np.linalg.det(m), 1.0)
    assert np.allclose(g.matrix_to_euler(m), e, atol=1e-9)


@pytest.mark.parametrize("tilt", [0.0, 180.0])
def test_euler_poles(tilt):
    m = g.euler_to_matrix([40.0, tilt, 25.0])
    back = g.matrix_to_euler(m)
    assert back[1] == pytest.approx(tilt)
    assert np.allclose(g.euler_to_matrix(back), m, atol=1e-12)


def test_quaternion_round_trips_and_deephemnma_formula():
    e = _random_euler(1000, seed=1)
    m = g.euler_to_matrix(e)
    q = g.matrix_to_quaternion(m)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0)
    assert np.all(q[:, 0] >= 0)
    assert np.allclose(g.quaternion_to_matrix(q), m, atol=1e-12)
    assert np.allclose(g.euler_to_matrix(g.quaternion_to_euler(q)), m, atol=1e-12)

    def qz(a):
        h = np.deg2rad(a) / 2
        return np.stack([np.cos(h), 0 * h, 0 * h, -np.sin(h)], -1)

    def qy(b):
        h = np.deg2rad(b) / 2
        return np.stack([np.cos(h), 0 * h, -np.sin(h), 0 * h], -1)

    # DeepHEMNMA supplementary formula: q = q_psi (x) q_theta (x) q_phi
    product = g.quaternion_multiply(g.quaternion_multiply(qz(e[:, 2]), qy(e[:, 1])), qz(e[:, 0]))
    assert np.allclose(g.canonical_quaternion(product), q, atol=1e-12)


def test_quaternion_rotates_vectors_like_matrix():
    e = _random_euler(50, seed=2)
    q = g.euler_to_quaternion(e)
    v = np.random.default_rng(3).standard_normal((50, 3))
    vq = np.concatenate([np.zeros((50, 1)), v], -1)
    conj = q * np.array([1, -1, -1, -1])
    rotated = g.quaternion_multiply(g.quaternion_multiply(q, vq), conj)[:, 1:]
    assert np.allclose(rotated, np.einsum("nij,nj->ni", g.euler_to_matrix(e), v), atol=1e-12)


def test_angular_distance():
    a = g.euler_to_matrix([10.0, 20.0, 30.0])
    b = g.euler_to_matrix([10.0, 20.0, 45.0])  # 15 degrees more in-plane rotation
    assert g.angular_distance(a, b) == pytest.approx(15.0, abs=1e-9)
    assert g.angular_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_torch_and_numpy_agree():
    e = _random_euler(10, seed=4)
    mt = g.euler_to_matrix(torch.tensor(e))
    assert isinstance(mt, torch.Tensor)
    assert np.allclose(mt.numpy(), g.euler_to_matrix(e))


def test_random_rotations_are_uniform():
    """Uniform on SO(3): the projection directions cover the sphere evenly (z ~ U(-1, 1))."""
    rots = g.random_rotations(20000, torch.Generator().manual_seed(0)).numpy()
    z = rots[:, 2, 2]
    hist, _ = np.histogram(z, bins=10, range=(-1, 1))
    assert hist.min() > 0.9 * 2000 and hist.max() < 1.1 * 2000


@pytest.mark.parametrize("step", [30.0, 15.0])
def test_so3_grid_covers_rotations_within_step(step):
    grid = g.so3_grid(step)
    mean, worst = g.grid_coverage(grid, n_samples=1000)
    # Every random rotation lies within one step of a grid point, half a step on average.
    assert worst < step
    assert mean < 0.5 * step
    # Size close to the volume of SO(3) over a cube of side `step` (8 pi^2 / step^3).
    assert len(grid) < 3 * 8 * np.pi ** 2 / np.deg2rad(step) ** 3
