"""Elastic network normal modes: ANM and RTB with sparse Hessians (numpy/scipy, CPU).

Model (ANM, Atilgan et al. 2001, as in ProDy): atoms closer than ``cutoff``
are joined by springs of constant ``gamma``; the Hessian block of a pair is
``H_ij = -gamma u u^T`` (``u`` the unit vector between them) and
``H_ii = -sum_j H_ij``.

RTB (Tama et al. 2000): atoms are grouped in rigid blocks (N consecutive
residues of a chain) and the Hessian is projected on the blocks' rigid-body
motions.  The projected Hessian is assembled pair by pair, without the full
3N x 3N matrix: a pair contributes ``gamma a a^T`` where ``a`` holds
``u^T P_i`` and ``-u^T P_j`` on the two blocks' coordinates (pairs inside one
block contribute nothing).  With an orthonormal rigid-body basis per block
the eigenpairs equal ProDy's RTB.

Modes are returned in atomic space with unit norm over all 3N coordinates
(HEMNMA's normalisation, so amplitudes are in HEMNMA's units), in order of
increasing eigenvalue: modes 1-6 are the rigid-body motions and mode 7 is
the first non-rigid mode.  Each vector's sign is fixed so that its largest
component is positive.
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh
from scipy.spatial import cKDTree

from ..core.clustering import kmeans
from ..core.errors import EngineInputError

__all__ = ["NormalModes", "NetworkError", "contacts", "relative_cutoff", "anm_hessian", "rtb_blocks", "spatial_blocks",
           "compute_modes", "check_connected"]

DENSE_LIMIT = 4500  # degrees of freedom up to which the dense eigensolver is used


class NetworkError(EngineInputError):
    """The elastic network cannot give normal modes (e.g. it is disconnected)."""


@dataclass
class NormalModes:
    vectors: np.ndarray      # (M, A, 3), unit norm over 3A
    eigenvalues: np.ndarray  # (M,)
    model: str               # "ANM" or "RTB"
    cutoff: float
    gamma: float
    n_blocks: int = 0

    def __len__(self):
        return len(self.eigenvalues)


def contacts(coords, cutoff):
    """Pairs ``(i, j)``, ``i < j``, of atoms closer than ``cutoff`` (int64 array (P, 2))."""
    tree = cKDTree(np.asarray(coords, dtype=np.float64))
    pairs = tree.query_pairs(float(cutoff), output_type="ndarray")
    return pairs.astype(np.int64).reshape(-1, 2)


def relative_cutoff(coords, percentile=95.0, neighbours=3):
    """Cutoff relative to the model's sampling (ContinuousFlex's "relative" mode).

    The ``percentile`` of the distances from every atom to its ``neighbours``
    nearest neighbours.  (ContinuousFlex/Xmipp histogram the 3 nearest atoms
    of higher index; all neighbours are used here.)
    """
    coords = np.asarray(coords, dtype=np.float64)
    k = min(neighbours, len(coords) - 1)
    d, _ = cKDTree(coords).query(coords, k=k + 1)
    return float(np.percentile(d[:, 1:].ravel(), percentile))


def check_connected(n_atoms, pairs, labels=None):
    """Raise :class:`NetworkError` naming the atoms outside the largest connected network."""
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_atoms, n_atoms))
    n_comp, comp = connected_components(graph, directed=False)
    if n_comp <= 1:
        return
    main = np.bincount(comp).argmax()
    loose = np.nonzero(comp != main)[0]
    names = [labels[i] if labels is not None else "atom %d" % (i + 1) for i in loose[:20]]
    raise NetworkError("the elastic network is disconnected (%d pieces, so %d zero-frequency modes instead of 6): "
                       "%d atoms are not linked to the rest within the cutoff, e.g. %s; increase the cutoff or "
                       "remove them" % (n_comp, 6 * n_comp, len(loose), ", ".join(names)))


def _pair_vectors(coords, pairs):
    d = coords[pairs[:, 1]] - coords[pairs[:, 0]]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def anm_hessian(coords, pairs, gamma=1.0):
    """Sparse ANM Hessian (3A x 3A, CSR)."""
    n = len(coords)
    u = _pair_vectors(coords, pairs)
    block = -gamma * u[:, :, None] * u[:, None, :]  # (P, 3, 3)
    i3 = 3 * pairs[:, 0, None, None] + np.arange(3)[None, :, None]
    j3 = 3 * pairs[:, 1, None, None] + np.arange(3)[None, None, :]
    i3, j3 = np.broadcast_to(i3, block.shape), np.broadcast_to(j3, block.shape)
    rows = np.concatenate([i3.ravel(), j3.ravel()])
    cols = np.concatenate([j3.ravel(), i3.ravel()])
    vals = np.concatenate([block.ravel(), block.ravel()])
    off = sp.coo_matrix((vals, (rows, cols)), shape=(3 * n, 3 * n)).tocsr()
    # Diagonal blocks: minus the sum of each atom's off-diagonal blocks.
    diag = np.zeros((n, 3, 3))
    np.add.at(diag, pairs[:, 0], -block)
    np.add.at(diag, pairs[:, 1], -block)
    di = 3 * np.arange(n)[:, None, None] + np.arange(3)[None, :, None]
    dj = 3 * np.arange(n)[:, None, None] + np.arange(3)[None, None, :]
    dmat = sp.coo_matrix((diag.ravel(), (np.broadcast_to(di, diag.shape).ravel(),
                                         np.broadcast_to(dj, diag.shape).ravel())), shape=(3 * n, 3 * n))
    return (off + dmat).tocsr()


def rtb_blocks(chains, resids, block_size=10):
    """Block id per atom: ``block_size`` consecutive residues of the same chain."""
    chains = np.asarray(chains).astype(str)
    resids = np.asarray(resids)
    block = np.zeros(len(resids), dtype=np.int64)
    next_id = 0
    for chain in dict.fromkeys(chains):  # chains in order of appearance
        sel = np.nonzero(chains == chain)[0]
        _, rank = np.unique(resids[sel], return_inverse=True)
        local = rank // block_size
        block[sel] = next_id + local
        next_id += int(local.max()) + 1
    return block


def spatial_blocks(coords, block_size=10, seed=0):
    """Blocks of about ``block_size`` neighbouring atoms (k-means of the coordinates), for
    models without a chain order, such as pseudoatoms."""
    n_blocks = max(1, int(np.ceil(len(coords) / float(block_size))))
    return kmeans(coords, n_blocks, seed=seed)[1]


def _rigid_bases(coords, blocks, n_blocks, tol=1e-6):
    """Per-atom rigid-body matrices ``P_i B_b`` (A, 3, 6) with orthonormal columns per block.

    ``P_i = [I | -[x_i]_x]`` (translation, rotation about the block centroid);
    ``B_b`` orthonormalises the block's basis and zeroes directions with no
    motion (e.g. rotation about the axis of a linear block).  Returns the
    matrices and a boolean mask of the kept block coordinates (n_blocks, 6).
    """
    counts = np.bincount(blocks, minlength=n_blocks).astype(np.float64)
    centroid = np.zeros((n_blocks, 3))
    np.add.at(centroid, blocks, coords)
    centroid /= counts[:, None]
    x = coords - centroid[blocks]
    # Inertia tensor per block: sum |x|^2 I - x x^T.
    inertia = np.zeros((n_blocks, 3, 3))
    np.add.at(inertia, blocks, (x * x).sum(1)[:, None, None] * np.eye(3) - x[:, :, None] * x[:, None, :])
    evals, evecs = np.linalg.eigh(inertia)  # rotation axes and moments
    scale = np.max(evals, axis=1, keepdims=True)
    rot_ok = evals > tol * np.maximum(scale, 1e-12)
    inv_sqrt = np.where(rot_ok, 1.0 / np.sqrt(np.where(rot_ok, evals, 1.0)), 0.0)
    axes = evecs * inv_sqrt[:, None, :]  # (B, 3, 3): orthonormal rotation generators as columns
    basis = np.zeros((len(coords), 3, 6))
    basis[:, :, :3] = np.eye(3) / np.sqrt(counts[blocks])[:, None, None]
    # Rotation omega moves atom i by omega x x_i = -[x_i]_x omega.
    cross = np.zeros((len(coords), 3, 3))
    cross[:, 0, 1], cross[:, 0, 2] = x[:, 2], -x[:, 1]
    cross[:, 1, 0], cross[:, 1, 2] = -x[:, 2], x[:, 0]
    cross[:, 2, 0], cross[:, 2, 1] = x[:, 1], -x[:, 0]
    basis[:, :, 3:] = np.einsum("aij,ajk->aik", cross, axes[blocks])
    keep = np.concatenate([np.ones((n_blocks, 3), bool), rot_ok], axis=1)
    return basis, keep


def _rtb_hessian(coords, pairs, blocks, gamma, chunk=500000):
    n_blocks = int(blocks.max()) + 1
    basis, keep = _rigid_bases(coords, blocks, n_blocks)
    inter = blocks[pairs[:, 0]] != blocks[pairs[:, 1]]
    pairs = pairs[inter]
    total = None
    for start in range(0, len(pairs), chunk):
        p = pairs[start:start + chunk]
        u = _pair_vectors(coords, p)
        gi = np.einsum("pi,pij->pj", u, basis[p[:, 0]])  # (P, 6)
        gj = np.einsum("pi,pij->pj", u, basis[p[:, 1]])
        n = len(p)
        rows = np.repeat(np.arange(n), 12)
        cols = np.concatenate([6 * blocks[p[:, 0], None] + np.arange(6), 6 * blocks[p[:, 1], None] + np.arange(6)],
                              axis=1).ravel()
        vals = np.concatenate([gi, -gj], axis=1).ravel()
        a = sp.csr_matrix((vals, (rows, cols)), shape=(n, 6 * n_blocks))
        part = (a.T @ a) * gamma
        total = part if total is None else total + part
    if total is None:
        total = sp.csr_matrix((6 * n_blocks, 6 * n_blocks))
    kept = np.nonzero(keep.ravel())[0]
    return total.tocsr()[kept][:, kept], basis, kept, n_blocks


def _lowest_eigenpairs(h, n_modes):
    dof = h.shape[0]
    if dof <= DENSE_LIMIT:
        vals, vecs = np.linalg.eigh(h.toarray() if sp.issparse(h) else h)
        return vals[:n_modes], vecs[:, :n_modes]
    # Shift-invert just below zero: the rigid modes and the slowest ones converge first.
    scale = abs(h.diagonal()).mean()
    vals, vecs = eigsh(h.tocsc(), k=n_modes, sigma=-1e-4 * scale, which="LM")
    order = np.argsort(vals)
    return vals[order], vecs[:, order]


def _fix_signs(vectors):
    flat = vectors.reshape(len(vectors), -1)
    idx = np.abs(flat).argmax(axis=1)
    signs = np.sign(flat[np.arange(len(flat)), idx])
    return vectors * np.where(signs == 0, 1.0, signs)[:, None, None]


def compute_modes(coords, n_modes=20, model="ANM", cutoff=15.0, gamma=1.0, blocks=None, labels=None):
    """Normal modes of an elastic network (see module docstring).

    ``n_modes`` counts the 6 rigid-body modes.  ``blocks`` (block id per atom)
    is required for RTB.  ``labels`` name atoms in error messages.
    """
    coords = np.asarray(coords, dtype=np.float64)
    n = len(coords)
    if n < 3:
        raise NetworkError("at least 3 atoms are needed for normal modes (got %d)" % n)
    model = model.upper()
    pairs = contacts(coords, cutoff)
    check_connected(n, pairs, labels)
    if model == "ANM":
        dof = 3 * n
        if n_modes > dof:
            raise NetworkError("%d modes asked for but %d atoms only have %d degrees of freedom" % (n_modes, n, dof))
        hessian = anm_hessian(coords, pairs, gamma)
        vals, vecs = _lowest_eigenpairs(hessian, n_modes)
        vectors = vecs.T.reshape(n_modes, n, 3)
        n_blocks = 0
    elif model == "RTB":
        if blocks is None:
            raise ValueError("RTB needs a block id per atom")
        blocks = np.unique(np.asarray(blocks), return_inverse=True)[1]
        hessian, basis, kept, n_blocks = _rtb_hessian(coords, pairs, blocks, gamma)
        dof = hessian.shape[0]
        if n_modes > dof:
            raise NetworkError("%d modes asked for but the %d rigid blocks only have %d degrees of freedom"
                               % (n_modes, n_blocks, dof))
        vals, small = _lowest_eigenpairs(hessian, n_modes)
        full = np.zeros((6 * n_blocks, n_modes))
        full[kept] = small
        # Atomic displacement of atom i: basis_i @ (block coordinates of its block).
        per_block = full.T.reshape(n_modes, n_blocks, 6)
        vectors = np.einsum("aij,maj->mai", basis, per_block[:, blocks])
    else:
        raise ValueError("model must be ANM or RTB, not %r" % model)
    vectors = vectors / np.linalg.norm(vectors.reshape(n_modes, -1), axis=1)[:, None, None]
    return NormalModes(_fix_signs(vectors), np.asarray(vals), model, float(cutoff), float(gamma), n_blocks)
