"""Latent vectors of any method through FlexHub: a SetOfParticlesFlex of progName "3DFlex" or "cryoSPHERE"
written from an engine-like result, read back, and taken unchanged by the conformational landscape."""
import os

import numpy as np
import pytest

import cryoflex_scipion
from conftest import launch

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")
N, D = 40, 4


def adjusted_rand_index(a, b):
    """Adjusted Rand index of two labelings (1: identical partitions, about 0: chance)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x):
        return (x * (x - 1) / 2).sum()

    index, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), len(a) * (len(a) - 1) / 2
    expected = rows * cols / total
    return (index - expected) / (0.5 * (rows + cols) - expected)


def _two_clusters(seed=0):
    """Latents in two well-separated clusters in D dimensions, particles assigned at random."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(N) % 2)
    direction = rng.standard_normal(D)
    centres = np.stack([direction, -direction]) * 4 / np.linalg.norm(direction)
    return labels, centres[labels] + 0.3 * rng.standard_normal((N, D))


def test_latent_sets_of_3dflex_and_cryosphere_go_through_the_landscape(project):
    from pwem.objects import ParticleFlex, SetOfParticlesFlex
    from pwem.protocols import ProtImportPdb
    from cryoflex_scipion.constants import FLEX_3DFLEX, FLEX_CRYOSPHERE
    from cryoflex_scipion.convert import (fill_latent_particles, latent_flex_info, pose_from_matrices, read_latents,
                                          set_latent_flex_info)
    from cryoflex_scipion.protocols import ProtCryoFlexLandscape, ProtCryoFlexSimulateParticles

    structure = launch(project, project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=MODEL)).outputPdb
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, nParticles=N, boxSize=24, samplingRate=4.0,
                              addNoise=False, seed=3)
    sim.inputStructure.set(structure)
    launch(project, sim)
    parts = sim.outputParticles
    labels, latents = _two_clusters()
    model_file = sim._getExtraPath("trained_model.pt")  # stands for the method's network file
    with open(model_file, "wb") as fh:
        fh.write(b"weights")

    # Bad inputs are refused with the reason.
    scratch = SetOfParticlesFlex(filename=sim._getExtraPath("scratch.sqlite"))
    with pytest.raises(ValueError, match="one row of d values per particle"):
        fill_latent_particles(scratch, parts, latents[:-1], FLEX_3DFLEX)
    with pytest.raises(ValueError, match="start with '_'"):
        fill_latent_particles(scratch, parts, latents, FLEX_3DFLEX, attributes={"error": np.zeros(N)})

    sets = {}
    for name, prog in (("outputLatents3DFlex", FLEX_3DFLEX), ("outputLatentsCryoSPHERE", FLEX_CRYOSPHERE)):
        flex = SetOfParticlesFlex(filename=sim._getPath("%s.sqlite" % name), progName=prog)
        new_pose = None
        if prog == FLEX_CRYOSPHERE:  # a method that also refines the poses: a new alignment
            rng = np.random.default_rng(1)
            new_pose = (np.stack([rng.uniform(-180, 180, N), rng.uniform(5, 175, N), rng.uniform(-180, 180, N)], -1),
                        rng.uniform(-4, 4, (N, 2)))
        fill_latent_particles(flex, parts, latents, prog, euler=None if new_pose is None else new_pose[0],
                              origin_A=None if new_pose is None else new_pose[1],
                              attributes={"_cryoflexLatentError": np.linspace(0, 1, N),
                                          "_cryoflexLatentSigma": np.full((N, D), 0.5)})
        set_latent_flex_info(flex, prog, model_file, D, epochs=3)
        flex.write()
        sets[name] = (prog, flex, new_pose)
    sim._defineOutputs(**{name: flex for name, (_, flex, _) in sets.items()})
    project._storeProtocol(sim)

    for name, (prog, flex, new_pose) in sets.items():
        back, ids = read_latents(flex, with_ids=True)
        assert np.allclose(back, latents, atol=1e-12) and list(ids) == list(range(1, N + 1))
        assert latent_flex_info(flex) == {"progName": prog, "modelPath": os.path.abspath(model_file), "latDim": D}
        first = flex.getFirstItem()
        assert isinstance(first, ParticleFlex) and first.getFlexInfo().getProgName() == prog
        assert first._cryoflexLatentError.get() == 0.0 and [float(v) for v in first._cryoflexLatentSigma] == [0.5] * D
        if new_pose is not None:
            matrices = np.stack([p.getTransform().getMatrix().copy() for p in flex.iterItems(orderBy="id")])
            euler, origin_px = pose_from_matrices(matrices)
            assert np.allclose(origin_px * 4.0, new_pose[1], atol=1e-9)

        land = project.newProtocol(ProtCryoFlexLandscape, grouping=0, k=2, dims=2, reconstruct=False)
        land.inputParticles.set(getattr(sim, name))
        launch(project, land)
        out = land.outputParticles
        groups = np.array([int(p._cryoflexGroup.get()) for p in out.iterItems(orderBy="id")])
        assert set(groups) == {1, 2}
        assert adjusted_rand_index(groups, labels) >= 0.99
        assert out.getFlexInfo().getProgName() == prog and out.getFirstItem().getFlexInfo().getProgName() == prog
        assert latent_flex_info(out) == {"progName": prog, "modelPath": os.path.abspath(model_file), "latDim": D}
        assert out.getFlexInfo().getAttr("epochs") == 3
        assert np.allclose(read_latents(out), latents, atol=1e-12)
        assert land.outputClasses.getSize() == 2
        assert land.readEngineSummary()["n_particles"] == N
