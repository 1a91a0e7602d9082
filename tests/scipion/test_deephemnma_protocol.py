"""Scripted-project test of DeepHEMNMA: train on simulated ground truth, predict, merge, bad input.

The network's accuracy is tested in tests/engine/test_deephemnma*.py and benchmarked on the H200;
here a short training checks the wiring: labels from Scipion objects, the registered model, the
predicted alignment and amplitudes written back exactly, merging, and the validation messages.
"""
import os

import numpy as np

import cryoflex_scipion
from cryoflex_scipion.engine.deephemnma import outputs as deephemnma_out
from conftest import launch

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")


def _simulated(project, nma, box, apix, n=96, seed=1):
    from cryoflex_scipion.protocols import ProtCryoFlexSimulateParticles
    sim = project.newProtocol(ProtCryoFlexSimulateParticles, conformations=1, modeList="7-8", amplitudes="150, 80",
                              nParticles=n, boxSize=box, samplingRate=apix, snr=1.0, seed=seed)
    sim.inputModes.set(nma.outputModes)
    return launch(project, sim).outputParticles


def test_deephemnma_train_predict_merge(project):
    from pwem.constants import ALIGN_PROJ
    from pwem.protocols import ProtImportPdb
    from cryoflex_scipion.convert import pose_from_matrices
    from cryoflex_scipion.engine.core.geometry import angular_distance, euler_to_matrix
    from cryoflex_scipion.protocols import (ProtCryoFlexDeepHEMNMAPredict, ProtCryoFlexDeepHEMNMATrain,
                                            ProtCryoFlexNMA)
    structure = launch(project, project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=MODEL)).outputPdb
    nma = project.newProtocol(ProtCryoFlexNMA, atomSelection=1, numberOfModes=10)
    nma.inputStructure.set(structure)
    launch(project, nma)
    parts = _simulated(project, nma, 48, 2.5)

    wrong = project.newProtocol(ProtCryoFlexDeepHEMNMATrain, labelSource=0)
    wrong.inputParticles.set(parts)
    assert "Labels missing: the particles are not the output of an elastic alignment" in "\n".join(wrong.validate())
    wrong = project.newProtocol(ProtCryoFlexDeepHEMNMATrain, labelSource=1, modeList="7-9")
    wrong.inputParticles.set(parts)
    assert "2 simulated amplitudes but 3 mode numbers" in "\n".join(wrong.validate())

    train = project.newProtocol(ProtCryoFlexDeepHEMNMATrain, labelSource=1, modeList="7-8", workingSize=32,
                                epochs=2, batchSize=32, valFraction=0.2)
    train.inputParticles.set(parts)
    launch(project, train)
    s = train.readEngineSummary()
    assert s["modes"] == [7, 8] and s["working_size"] == 32 and s["epochs"] == 2
    assert s["n_train"] + s["n_validation"] + s["outliers"] == 96
    model = train.outputModel
    assert model.getModeNumbers() == [7, 8] and model.getImageSize() == 48 and model.getSamplingRate() == 2.5
    assert os.path.exists(model.getFileName())
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from cryoflex_scipion.viewers import CryoFlexDeepHEMNMATrainViewer
    viewer = CryoFlexDeepHEMNMATrainViewer(project=project)
    viewer.setProtocol(train)
    fig = Figure()
    viewer._showCurves()[0].draw(fig)
    assert len(fig.axes) == 4 and len(fig.axes[0].lines) == 2 and len(fig.axes[2].lines[0].get_xdata()) == 2

    predict = project.newProtocol(ProtCryoFlexDeepHEMNMAPredict, modeList="7-9")
    predict.inputModel.set(model)
    predict.inputParticles.set(_simulated(project, nma, 40, 2.5, n=4))
    errors = "\n".join(predict.validate())
    assert "trained on modes [7, 8], not [7, 8, 9]" in errors and "rescale or re-extract" in errors

    predict = project.newProtocol(ProtCryoFlexDeepHEMNMAPredict)
    predict.inputModel.set(model)
    predict.inputParticles.set(parts)
    launch(project, predict)
    out = predict.outputParticles
    assert out.getSize() == 96 and out.getAlignment() == ALIGN_PROJ
    assert [int(v) for v in str(out.getFlexInfo().getAttr("modeNumbers")).split(",")] == [7, 8]
    with np.load(predict._enginePath(deephemnma_out.RESULTS)) as r:
        euler, origin, amps = r["euler"], r["origin_A"], r["amplitudes"]
    matrices, zflex = [], []
    for p in out.iterItems(orderBy="id"):  # the set reuses one item object: copy values inside the loop
        matrices.append(p.getTransform().getMatrix().copy())
        zflex.append(list(p.getZFlex()))
    matrices = np.stack(matrices)
    got_euler, got_origin_px = pose_from_matrices(matrices)
    assert np.max(angular_distance(euler_to_matrix(got_euler), euler_to_matrix(euler))) < 1e-4
    assert np.allclose(got_origin_px * 2.5, origin, atol=1e-6)
    assert np.allclose(np.array(zflex), amps, atol=1e-6)

    # Merging with a labelled set: every particle of it keeps its values exactly.
    again = project.newProtocol(ProtCryoFlexDeepHEMNMAPredict)
    again.inputModel.set(model)
    again.inputParticles.set(parts)
    again.mergeWith.set(out)
    launch(project, again)
    assert again.readEngineSummary()["n_merged"] == 96
    with np.load(again._enginePath(deephemnma_out.RESULTS)) as r:
        assert np.allclose(r["amplitudes"], amps, atol=1e-5)
        assert np.max(angular_distance(euler_to_matrix(r["euler"]), euler_to_matrix(euler))) < 1e-3
    assert any("kept their HEMNMA values" in line for line in again.summary())
