"""Scripted-project tests of normal mode analysis, pseudoatoms and simulation along normal modes."""
import os

import numpy as np
import pytest
import torch

import cryoflex_scipion
from cryoflex_scipion.engine.nma import outputs as nma_out
from conftest import launch

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")


def _import_model(project):
    from pwem.protocols import ProtImportPdb
    return launch(project, project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=MODEL)).outputPdb


def _nma(project, structure, **kwargs):
    from cryoflex_scipion.protocols import ProtCryoFlexNMA
    prot = project.newProtocol(ProtCryoFlexNMA, **kwargs)
    prot.inputStructure.set(structure)
    return launch(project, prot)


def test_nma_set_is_readable_by_prody(project):
    prody = pytest.importorskip("prody")
    nma = _nma(project, _import_model(project))
    modes = nma.outputModes
    items = [(m.getCollectivity(), m.isEnabled()) for m in modes.iterItems(orderBy="id")]  # clone() drops enabled
    assert len(items) == 20
    assert not any(enabled for _, enabled in items[:6])
    table = np.genfromtxt(nma._enginePath(nma_out.MODES_TABLE), delimiter=",", names=True)
    for (coll_set, enabled), coll, on in zip(items, table["collectivity"], table["enabled"]):
        assert coll_set == pytest.approx(coll)
        assert enabled == bool(on) and (not on or coll >= 0.15)
    assert modes.getPdb().getFileName() == nma.outputStructure.getFileName()
    vectors = np.load(nma._enginePath(nma_out.MODES))
    assert vectors.shape == (20, 214, 3)
    parsed = prody.parseScipionModes(os.path.abspath(modes.getFileName()))
    assert parsed.numModes() == 20
    assert np.allclose(parsed.getEigvecs().T.reshape(20, 214, 3), vectors, atol=1e-12)
    assert np.allclose(parsed.getEigvals()[6:], table["eigenvalue"][6:], rtol=1e-10)
    # The same modes read back through our own conversion.
    from cryoflex_scipion.convert import modes_to_array
    arr, numbers = modes_to_array(modes, enabled_only=False)
    assert numbers == list(range(1, 21)) and np.allclose(arr, vectors, atol=1e-12)
    summary = nma.readEngineSummary()
    assert summary["bfactor_correlation"] > 0.4  # 20 modes only; all modes give 0.53 (engine test)
    for k in range(7, 21):
        assert os.path.exists(nma._enginePath(nma_out.animation(k)))
    _check_nma_viewer(project, nma)


def _check_nma_viewer(project, nma):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from cryoflex_scipion.viewers import CryoFlexNMAViewer
    viewer = CryoFlexNMAViewer(project=project)
    viewer.setProtocol(nma)
    fig = Figure()
    viewer._showPlots()[0].draw(fig)
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 20
    viewer._showAnimation()
    assert "coordsets true" in open(nma._getExtraPath("animate_mode_7.cxc")).read()


def test_simulation_along_rtb_modes_keeps_ground_truth(project):
    """RTB modes of all heavy atoms -> particles deformed with known amplitudes, reproduced from the truth."""
    from cryoflex_scipion.constants import GT_AMPLITUDES
    from cryoflex_scipion.convert import modes_to_array, particles_to_table
    from cryoflex_scipion.engine.core.atoms import deform, read_atoms
    from cryoflex_scipion.engine.core.metrics import image_correlation
    from cryoflex_scipion.engine.core.projection import project_gaussians
    from cryoflex_scipion.engine.core.io.stack import ImageSource
    from cryoflex_scipion.protocols import ProtCryoFlexSimulateParticles

    nma = _nma(project, _import_model(project), atomSelection=2, networkModel=1, cutoff=8.0, numberOfModes=10)
    assert nma.readEngineSummary()["n_atoms"] == 1656 + 5  # heavy atoms of 1AKE chain A
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, conformations=1, modeList="7-8", amplitudes="150, 80",
                              nParticles=40, boxSize=48, samplingRate=2.5, addNoise=False, applyCtf=False, seed=3)
    sim.inputModes.set(nma.outputModes)
    launch(project, sim)
    parts = sim.outputParticles
    amps = np.array([list(getattr(p, GT_AMPLITUDES)) for p in parts.iterItems(orderBy="id")], dtype=float)
    assert amps.shape == (40, 2) and 30 < amps[:, 0].std() < 300
    table = particles_to_table(parts)
    model = read_atoms(nma.outputStructure.getFileName())
    vectors, numbers = modes_to_array(nma.outputModes, numbers=[7, 8])
    coords = deform(model.coords - model.center(), vectors, amps)
    images = project_gaussians(torch.as_tensor(coords), torch.as_tensor(model.weights), 2.5,
                               torch.as_tensor(table.rotations()), 48, 2.5,
                               shifts_px=torch.as_tensor(table.shifts_px()))
    with ImageSource(table) as src:
        observed = torch.as_tensor(src.read(np.arange(40)), dtype=torch.float64)
    assert image_correlation(images, observed).min().item() > 0.999
    # Without the deformation the images no longer match as well: the amplitudes matter.
    rigid = project_gaussians(torch.as_tensor(model.coords - model.center()), torch.as_tensor(model.weights), 2.5,
                              torch.as_tensor(table.rotations()), 48, 2.5, shifts_px=torch.as_tensor(table.shifts_px()))
    assert image_correlation(rigid, observed).mean().item() < image_correlation(images, observed).mean().item() - 0.01


def test_pseudoatoms_protocol_and_nma(project, data_path):
    from pwem.protocols import ProtImportVolumes
    from cryoflex_scipion.protocols import ProtCryoFlexVolumeToPseudoatoms
    imp = launch(project, project.newProtocol(ProtImportVolumes, filesPath=os.path.dirname(data_path("1ake.mrc")),
                                              filesPattern="1ake.mrc", samplingRate=2.0))
    pseudo = project.newProtocol(ProtCryoFlexVolumeToPseudoatoms, refineSteps=60)
    pseudo.inputVolume.set(imp.outputVolume)
    launch(project, pseudo)
    s = pseudo.readEngineSummary()
    print("pseudoatoms protocol: %d atoms, correlation %.4f" % (s["n_atoms"], s["correlation"]))
    assert s["correlation"] >= 0.95
    structure = pseudo.outputStructure
    assert structure.getPseudoAtoms()
    nma = _nma(project, structure, numberOfModes=12)
    assert nma.readEngineSummary()["n_atoms"] == s["n_atoms"]
    assert nma.outputModes.getSize() == 12


def test_nma_validation(project):
    from cryoflex_scipion.protocols import ProtCryoFlexNMA, ProtCryoFlexVolumeToPseudoatoms
    structure = _import_model(project)
    # A custom ProDy selection is checked when the run starts (the GUI's Python cannot load ProDy).
    prot = project.newProtocol(ProtCryoFlexNMA, atomSelection=3, customSelection="name ZZ")
    prot.inputStructure.set(structure)
    assert prot.validate() == []
    project.launchProtocol(prot, wait=True)
    assert prot.isFailed() and "matches no atom" in prot.getErrorMessage()
    prot = project.newProtocol(ProtCryoFlexNMA, numberOfModes=1000)
    prot.inputStructure.set(structure)
    assert any("degrees of freedom" in e for e in prot.validate())
    prot = project.newProtocol(ProtCryoFlexVolumeToPseudoatoms)
    assert prot.validate()


def test_disconnected_network_fails_with_the_reason(project, tmp_path):
    """Two chains 200 A apart: the run fails and says which atoms are cut off."""
    from pwem.protocols import ProtImportPdb
    lines = [l for l in open(MODEL) if l.startswith("ATOM")]
    far = []
    for line in lines[:40]:
        x = float(line[30:38]) + 200.0
        far.append(line[:21] + "B" + line[22:30] + "%8.3f" % x + line[38:])
    path = tmp_path / "two.pdb"
    path.write_text("".join(lines + far) + "END\n")
    structure = launch(project, project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=str(path))).outputPdb
    from cryoflex_scipion.protocols import ProtCryoFlexNMA
    prot = project.newProtocol(ProtCryoFlexNMA)
    prot.inputStructure.set(structure)
    project.launchProtocol(prot, wait=True)
    assert prot.isFailed()
    assert "disconnected" in prot.getErrorMessage() and "B:" in prot.getErrorMessage()


def test_elastic_alignment_protocol_recovers_ground_truth(project):
    """NMA -> particles along modes 7-9 (raw images with CTF, SNR 1) -> HEMNMA protocol -> errors vs truth."""
    from cryoflex_scipion.constants import FLEX_NMA, GT_AMPLITUDES, GT_ANGLES, GT_ORIGIN
    from cryoflex_scipion.engine.core import geometry as g
    from cryoflex_scipion.protocols import ProtCryoFlexElasticAlign, ProtCryoFlexSimulateParticles
    structure = _import_model(project)
    nma = _nma(project, structure, atomSelection=2, networkModel=1, cutoff=8.0, numberOfModes=10)
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, conformations=1, modeList="7-9",
                              amplitudeDistribution=1, amplitudes="150", nParticles=16, boxSize=64,
                              samplingRate=1.3, snr=1.0, maxShift=3.0, defocusMin=8000.0, defocusMax=12000.0, seed=4)
    sim.inputModes.set(nma.outputModes)
    launch(project, sim)
    align = project.newProtocol(ProtCryoFlexElasticAlign, modeList="7-9", workingSize=64, maxShift=4.0,
                                batchSize=16)
    align.inputParticles.set(sim.outputParticles)
    align.inputModes.set(nma.outputModes)
    launch(project, align)
    out = align.outputParticles
    assert out.getSize() == 16 and out.getFlexInfo().getProgName() == FLEX_NMA
    assert out.getFlexInfo().getAttr("modeNumbers") == "7,8,9"  # CsvList as stored by FlexInfo
    truth = {p.getObjId(): (np.array(list(getattr(p, GT_AMPLITUDES)), dtype=float),
                            np.array(list(getattr(p, GT_ANGLES)), dtype=float),
                            np.array(list(getattr(p, GT_ORIGIN)), dtype=float))
             for p in sim.outputParticles.iterItems()}
    from cryoflex_scipion.convert import pose_from_matrices
    amp_err, angles = [], []
    for p in out.iterItems():
        amps, eul, origin = truth[p.getObjId()]
        z = p.getZFlex()
        assert len(z) == 3 and np.allclose(np.fromstring(p._xmipp_nmaDisplacements.get(), sep=","), z)
        assert p._xmipp_cost.get() == p._cryoflexCost.get() and p._cryoflexMahalanobis.get() >= 0  # ContinuousFlex's
        assert p.getFlexInfo().getProgName() == FLEX_NMA
        assert 0.85 < p._cryoflexFitQuality.get() < 1.2 and p._cryoflexReference.get() == 0  # motion along the modes
        amp_err.append(np.abs(z - amps))
        e, _ = pose_from_matrices(p.getTransform().getMatrix()[None])
        angles.append(float(g.angular_distance(g.euler_to_matrix(e[0]), g.euler_to_matrix(eul))))
    amp_err, angles = np.array(amp_err), np.array(angles)
    print("HEMNMA protocol: angle %.2f deg mean, amplitude MAE %s" % (angles.mean(), amp_err.mean(0).round(2)))
    assert angles.mean() < 2.0 and amp_err.mean() < 15.0  # baseline (zero amplitudes) is about 75
    s = align.readEngineSummary()
    assert s["n_particles"] == 16 and "Mean cost" in align.summary()[1]
    assert align.outputParticlesKept.getSize() == 16 - s["outliers"]
    assert s["poor_fit"] == 0 and any("Fit quality" in line for line in align.summary())

    # Continue after editing the mode list and adding another conformation (here the imported model, all atoms:
    # matched to the modes' atoms by chain, residue and name): the work is redone, not the old outputs kept
    from pyworkflow.protocol.constants import MODE_RESUME
    align.modeList.set("7-8")
    align.otherReferences.append(structure)
    align.intermediates.set(0)
    align.runMode.set(MODE_RESUME)
    launch(project, align)
    align = project.getProtocol(align.getObjId())  # outputs as the rerun registered them
    out = align.outputParticles
    assert out.getSize() == 16 and out.getFlexInfo().getAttr("modeNumbers") == "7,8"
    assert [len(p.getZFlex()) for p in out.iterItems()] == [2] * 16, [list(p.getZFlex()) for p in out.iterItems()][:3]
    s = align.readEngineSummary()
    assert s["modes"] == [1, 2] and s["resumed_batches"] == 0  # the engine numbers the modes of its file
    assert s["conformations"] == 2 and sum(s["particles_per_conformation"]) == 16
    assert any("Aligned against 2 conformations" in line for line in align.summary())


def test_elastic_alignment_validation(project, data_path):
    from pwem.protocols import ProtImportParticles
    from cryoflex_scipion.protocols import ProtCryoFlexElasticAlign
    nma = _nma(project, _import_model(project), numberOfModes=10)
    imp = launch(project, project.newProtocol(ProtImportParticles, importFrom=0, filesPath=os.path.dirname(
        data_path("relion31.mrcs")), filesPattern="relion31.mrcs", samplingRate=2.806))
    prot = project.newProtocol(ProtCryoFlexElasticAlign, modeList="7-12")
    prot.inputParticles.set(imp.outputParticles)
    prot.inputModes.set(nma.outputModes)
    errors = prot.validate()
    assert any("CTF information is required" in e for e in errors)
    assert any("asks for modes 11-12, but the set has 10" in e for e in errors)
    prot = project.newProtocol(ProtCryoFlexElasticAlign, ctfMode=2, modeList="7-8", useInputAlignment=2)
    prot.inputParticles.set(imp.outputParticles)
    prot.inputModes.set(nma.outputModes)
    assert any("projection alignment" in e for e in prot.validate())
    # the engine's malformed-input classes, refused by the form before anything runs
    from cryoflex_scipion.protocols import ProtCryoFlexSimulateParticles
    for settings, message in (({"modeList": "9-7"}, "reversed"), ({"modeList": "abc"}, "use numbers and ranges"),
                              ({"modeList": "1-6"}, "rigid-body"), ({"modeList": "7-99"}, "asks for modes 11-99"),
                              ({"modeList": "7,7"}, "twice"), ({"modeList": "7-9", "batchSize": 0}, "Batch size"),
                              ({"modeList": "7-9", "starts": 0}, "Starts"),
                              ({"modeList": "7-9", "atomSigma": -1.0}, "Atom width")):
        prot = project.newProtocol(ProtCryoFlexElasticAlign, ctfMode=2, **settings)
        prot.inputParticles.set(imp.outputParticles)
        prot.inputModes.set(nma.outputModes)
        errors = prot.validate()
        assert any(message.lower() in e.lower() for e in errors), (settings, errors)
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, conformations=1, modeList="7-99", amplitudes="100")
    sim.inputModes.set(nma.outputModes)
    assert any("asks for modes 11-99, but the set has 10" in e for e in sim.validate())
    assert len([e for e in sim.validate() if "11-99" in e][0]) < 120  # no list of 89 numbers


def test_landscape_protocol(project):
    """HEMNMA amplitudes (refined from known poses) -> landscape: groups, maps, centroids, classes, viewer."""
    from cryoflex_scipion.engine.core.atoms import read_atoms
    from cryoflex_scipion.convert import modes_to_array
    from cryoflex_scipion.protocols import (ProtCryoFlexElasticAlign, ProtCryoFlexLandscape,
                                            ProtCryoFlexSimulateParticles)
    nma = _nma(project, _import_model(project), atomSelection=2, networkModel=1, cutoff=8.0, numberOfModes=10)
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, conformations=1, modeList="7-8",
                              amplitudeDistribution=1, amplitudes="250, 30", nParticles=60, boxSize=48,
                              samplingRate=2.0, snr=2.0, maxShift=2.0, seed=9)
    sim.inputModes.set(nma.outputModes)
    launch(project, sim)
    align = project.newProtocol(ProtCryoFlexElasticAlign, modeList="7-8", workingSize=48, useInputAlignment=2,
                                outputKept=False, batchSize=60)
    align.inputParticles.set(sim.outputParticles)
    align.inputModes.set(nma.outputModes)
    launch(project, align)
    land = project.newProtocol(ProtCryoFlexLandscape, k=2, dims=2)
    land.inputParticles.set(align.outputParticles)
    land.inputModes.set(nma.outputModes)
    launch(project, land)

    features = np.array([p.getZFlex() for p in align.outputParticles.iterItems(orderBy="id")])
    out = [(p.getZRed(), int(p._cryoflexGroup.get())) for p in land.outputParticles.iterItems(orderBy="id")]
    reduced = np.array([z for z, _ in out])
    groups = np.array([g for _, g in out])
    assert reduced.shape == (60, 2) and set(groups) == {1, 2}
    # PC1 follows mode 7 (amplitudes spread +/-250 against +/-30): the groups split along it.
    assert abs(np.corrcoef(reduced[:, 0], features[:, 0])[0, 1]) > 0.99
    assert max(reduced[groups == 1, 0]) < min(reduced[groups == 2, 0])
    classes = land.outputClasses
    assert classes.getSize() == 2
    sizes = sorted(len(list(c.iterItems())) for c in classes.iterItems())
    assert sizes == sorted([(groups == 1).sum(), (groups == 2).sum()])
    assert land.outputVolumes.getSize() == 2
    # Centroid structure = reference deformed by the group's mean amplitudes.
    reference = read_atoms(nma.outputStructure.getFileName())
    vectors, _ = modes_to_array(nma.outputModes, numbers=[7, 8])
    for struct in land.outputStructures.iterItems():
        g = struct.getObjId()
        mean = features[groups == g].mean(0)
        expected = reference.coords + np.einsum("m,mai->ai", mean, vectors)
        assert np.allclose(read_atoms(struct.getFileName()).coords, expected, atol=2e-3)  # PDB precision

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from cryoflex_scipion.viewers import CryoFlexLandscapeViewer
    viewer = CryoFlexLandscapeViewer(project=project)
    viewer.setProtocol(land)
    for colour_by in (0, 1):  # by group, and by the simulation's ground truth
        viewer.colourBy.set(colour_by)
        fig = Figure()
        viewer._showLandscape()[0].draw(fig)
        assert fig.axes
    fig = Figure()
    viewer._showFsc()[0].draw(fig)
    assert len(fig.axes[0].get_lines()) == 2 + 2
