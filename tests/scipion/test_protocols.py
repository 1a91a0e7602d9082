"""Scripted-project tests of the simulate and reconstruct protocols, with accuracy checks."""
import os
import shutil

import numpy as np
import pytest
import torch

import cryoflex_scipion
from conftest import launch

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")


def _import_model(project, path=MODEL):
    from pwem.protocols import ProtImportPdb
    prot = project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=path)
    return launch(project, prot).outputPdb


def _simulate(project, structure, **kwargs):
    from cryoflex_scipion.protocols import ProtCryoFlexSimulateParticles
    prot = project.newProtocol(ProtCryoFlexSimulateParticles, **kwargs)
    prot.inputStructure.set(structure)
    return launch(project, prot)


def _images(table):
    from cryoflex_scipion.engine.core.io.stack import ImageSource
    with ImageSource(table) as src:
        return torch.as_tensor(src.read(np.arange(len(table))), dtype=torch.float64)


def test_simulated_set_reproduces_its_images_through_convert(project):
    """The convention test: poses and CTF read back from the registered Scipion set re-create the images."""
    from cryoflex_scipion.constants import GT_ANGLES, GT_ORIGIN
    from cryoflex_scipion.convert import particles_to_table
    from cryoflex_scipion.engine.core.atoms import read_atoms
    from cryoflex_scipion.engine.core.ctf import apply_ctf, compute_ctf
    from cryoflex_scipion.engine.core.metrics import image_correlation
    from cryoflex_scipion.engine.core.projection import project_gaussians

    structure = _import_model(project)
    sim = _simulate(project, structure, nParticles=60, boxSize=48, samplingRate=2.5, addNoise=False,
                    maxShift=6.0, astigmatism=500.0, seed=11)
    parts = sim.outputParticles
    assert parts.getSize() == 60 and parts.hasAlignmentProj() and parts.hasCTF()
    assert parts.getSamplingRate() == 2.5 and parts.getXDim() == 48
    assert sim.outputVolume.getSamplingRate() == 2.5

    table = particles_to_table(parts)
    # Ground truth travels with each particle and matches the registered alignment.
    truth = [(p.clone()) for p in parts.iterItems(orderBy="id")]
    gt_angles = np.array([list(getattr(p, GT_ANGLES)) for p in truth], dtype=float)
    gt_origin = np.array([list(getattr(p, GT_ORIGIN)) for p in truth], dtype=float)
    assert np.allclose(table.origin_A, gt_origin, atol=1e-9)
    from cryoflex_scipion.engine.core.geometry import angular_distance, euler_to_matrix
    assert np.max(angular_distance(euler_to_matrix(table.euler), euler_to_matrix(gt_angles))) < 1e-6

    model = read_atoms(MODEL, "not hydrogen")
    coords = torch.as_tensor(model.coords - model.center())
    rot = torch.as_tensor(table.rotations())
    proj = project_gaussians(coords, torch.as_tensor(model.weights), 2.5, rot, 48, 2.5,
                             shifts_px=torch.as_tensor(table.shifts_px()))
    expected = apply_ctf(proj, compute_ctf(table.ctf, 48, 2.5, dtype=torch.float64))
    corr = image_correlation(expected, _images(table))
    print("convert round trip: image correlation min %.6f" % corr.min().item())
    assert corr.min().item() > 0.99


def test_reconstruct_noiseless_simulation_to_nyquist(project):
    from cryoflex_scipion.protocols import ProtCryoFlexReconstruct
    structure = _import_model(project)
    sim = _simulate(project, structure, nParticles=1200, boxSize=40, samplingRate=3.0, addNoise=False,
                    maxShift=3.0, seed=5)
    rec = project.newProtocol(ProtCryoFlexReconstruct, batchSize=300)
    rec.inputParticles.set(sim.outputParticles)
    rec.referenceVolume.set(sim.outputVolume)
    launch(project, rec)
    summary = rec.readEngineSummary()
    print("reconstruct protocol: FSC 0.5 vs ground truth at %.2f px" % summary["reference_resolution_0.5_px"])
    assert summary["reference_resolution_0.5_px"] < 2.5
    vol = rec.outputVolume
    assert vol.getSamplingRate() == pytest.approx(3.0)
    assert vol.getOrigin().getShifts() == pytest.approx([-60.0, -60.0, -60.0])
    halves = vol.getHalfMaps().split(",")
    assert len(halves) == 2 and all(os.path.exists(h) for h in halves)
    freq, values = rec.outputFSC.getData()
    # Noiseless half-maps agree to 0.99 up to 3/4 of Nyquist, and beyond 0.143 everywhere.
    assert len(freq) == 21 and min(values[:16]) > 0.99 and min(values) > 0.143
    assert rec.outputFSCReference is not None
    assert any("Resolution vs reference" in line for line in rec.summary())
    _check_viewers(project, sim, rec)


def _check_viewers(project, sim, rec):
    """Viewers draw their figures (headless) and write ChimeraX scripts with the map geometry."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from cryoflex_scipion.viewers import CryoFlexReconstructViewer, CryoFlexSimulateViewer
    viewer = CryoFlexReconstructViewer(project=project)
    viewer.setProtocol(rec)  # what the GUI does before showing the form
    fig = Figure()
    viewer._showFsc()[0].draw(fig)
    assert len(fig.axes[0].get_lines()) == 2 + 2  # two curves and two threshold lines
    viewer._showMap()
    text = open(rec._getExtraPath("show_map.cxc")).read()
    assert text.count("open ") == 3 and "voxelSize 3 origin -60,-60,-60" in text
    viewer = CryoFlexSimulateViewer(project=project)
    viewer.setProtocol(sim)
    for view in viewer._showGallery() + viewer._showTruth():
        fig = Figure()
        view.draw(fig)
        assert fig.axes


def test_simulate_from_structures_labels_the_true_structure(project, tmp_path):
    """Particles from a set of structures carry the index of the one they were made from."""
    from pwem.protocols import ProtImportSetOfAtomStructs
    from cryoflex_scipion.constants import GT_FRAME
    from cryoflex_scipion.convert import particles_to_table
    from cryoflex_scipion.engine.core.atoms import read_atoms
    from cryoflex_scipion.engine.core.metrics import image_correlation
    from cryoflex_scipion.engine.core.projection import project_gaussians
    from cryoflex_scipion.protocols import ProtCryoFlexSimulateParticles

    folder = tmp_path / "adk"
    folder.mkdir()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("adk_closed.pdb", "adk_open.pdb"):
        shutil.copy(os.path.join(here, "data", name), folder / name)
    imp = launch(project, project.newProtocol(ProtImportSetOfAtomStructs, inputPdbData=1, filesPath=str(folder),
                                              filesPattern="adk_*.pdb"))
    structures = imp.outputAtomStructs
    first = _import_model(project, str(folder / "adk_closed.pdb"))
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, conformations=2, nParticles=40, boxSize=48,
                              samplingRate=2.5, addNoise=False, applyCtf=False, atomSelection="name CA", seed=2)
    sim.inputStructure.set(first)
    sim.inputStructures.set(structures)
    launch(project, sim)
    parts = sim.outputParticles
    frames = np.array([int(getattr(p, GT_FRAME)) for p in parts.iterItems(orderBy="id")])
    assert set(frames) == {0, 1}

    table = particles_to_table(parts)
    files = [item.getFileName() for item in structures.iterItems(orderBy="id")]
    models = [read_atoms(f, "name CA") for f in files]
    centre = read_atoms(first.getFileName(), "name CA").center()
    images = _images(table)
    rot = torch.as_tensor(table.rotations())
    shifts = torch.as_tensor(table.shifts_px())
    corr = torch.stack([image_correlation(project_gaussians(torch.as_tensor(m.coords - centre),
                                                            torch.as_tensor(m.weights), 2.5, rot, 48, 2.5,
                                                            shifts_px=shifts), images) for m in models])
    assert np.array_equal(corr.argmax(0).numpy(), frames)
    assert corr.max(0).values.min().item() > 0.999


def test_validation_messages(project, data_path):
    from pwem.protocols import ProtImportParticles
    from cryoflex_scipion.protocols import ProtCryoFlexReconstruct, ProtCryoFlexSimulateParticles
    imp = launch(project, project.newProtocol(ProtImportParticles, importFrom=0, filesPath=os.path.dirname(
        data_path("relion31.mrcs")), filesPattern="relion31.mrcs", samplingRate=2.806))
    rec = project.newProtocol(ProtCryoFlexReconstruct)
    rec.inputParticles.set(imp.outputParticles)
    errors = rec.validate()
    assert any("projection alignment" in e for e in errors)

    sim = project.newProtocol(ProtCryoFlexSimulateParticles, defocusMin=30000.0, defocusMax=10000.0)
    errors = sim.validate()
    assert any("atomic structure" in e for e in errors) and any("Defocus range" in e for e in errors)
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, conformations=1, amplitudes="a, b")
    errors = sim.validate()
    assert any("normal modes" in e for e in errors)
