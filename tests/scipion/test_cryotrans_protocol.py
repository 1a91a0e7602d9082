"""Scripted-project test of model-to-map and CryoTRANS: open AdK map morphed into a 7 A closed map."""
import os

import numpy as np

import cryoflex_scipion
from conftest import launch

DATA = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data")


def _import(project, name):
    from pwem.protocols import ProtImportPdb
    return launch(project, project.newProtocol(ProtImportPdb, inputPdbData=1,
                                               pdbFile=os.path.join(DATA, name))).outputPdb


def _model_map(project, structure, **kwargs):
    from cryoflex_scipion.protocols import ProtCryoFlexModelToMap
    prot = project.newProtocol(ProtCryoFlexModelToMap, **kwargs)
    prot.inputStructure.set(structure)
    return launch(project, prot).outputVolume


def test_cryotrans_protocol_morphs_open_into_closed(project):
    from cryoflex_scipion.engine.core.io.mrc import read_map
    from cryoflex_scipion.protocols import ProtCryoFlexCryoTrans
    closed = _import(project, "adk_1ake_A.pdb")
    opened = _import(project, "adk_4ake_A.pdb")
    f0 = _model_map(project, opened, boxSize=40, samplingRate=2.0)
    f1 = _model_map(project, closed, boxSize=40, samplingRate=2.0, resolution=7.0)
    assert f0.getSamplingRate() == 2.0 and f0.getDim() == (40, 40, 40)
    assert np.allclose(f0.getOrigin(force=True).getShifts(), (-40.0, -40.0, -40.0))

    prot = project.newProtocol(ProtCryoFlexCryoTrans, schedule="2:600,1:300", steps=6)
    prot.inputVolume0.set(f0)
    prot.inputVolume1.set(f1)
    prot.referenceStructure.set(closed)
    launch(project, prot)
    s = prot.readEngineSummary()
    m = s["model_fsc_0.5_A"]
    print("protocol: model FSC 0.5 f0 %.2f, f1 %.2f, generated %.2f A" % (m["initial"], m["target"], m["generated"]))
    assert m["generated"] < m["initial"] - 1.5 and m["generated"] < m["target"]
    assert s["fsc_generated_target"]["fsc_0.5_A"] < s["fsc_initial_target"]["fsc_0.5_A"]
    frames = prot.outputTrajectory
    assert frames.getSize() == 7 and frames.getSamplingRate() == 2.0
    first = read_map(frames.getFirstItem().getFileName())[0]
    assert np.allclose(first.sum(), read_map(prot.outputVolume.getFileName())[0].sum(), rtol=1e-5)
    assert np.allclose(prot.outputVolume.getOrigin(force=True).getShifts(), (-40.0, -40.0, -40.0))
    disp = read_map(prot.outputDisplacement.getFileName())[0]
    assert abs(disp.max() - s["displacement_max_A"]) < 1e-3
    assert any("FSC 0.5 generated vs target" in line for line in prot.summary())


def test_cryotrans_validation_messages(project):
    from cryoflex_scipion.protocols import ProtCryoFlexCryoTrans
    closed = _import(project, "adk_1ake_A.pdb")
    f0 = _model_map(project, closed, boxSize=32, samplingRate=2.0)
    f1 = _model_map(project, closed, boxSize=36, samplingRate=2.5, resolution=7.0)
    prot = project.newProtocol(ProtCryoFlexCryoTrans, resample=False, schedule="2x300", maskRigidity="1 2")
    prot.inputVolume0.set(f0)
    prot.inputVolume1.set(f1)
    errors = " ".join(prot.validate())
    assert "different grids" in errors and "schedule" in errors and "2 weights for 0 masks" in errors
    prot = project.newProtocol(ProtCryoFlexCryoTrans)
    prot.inputVolume0.set(f0)
    prot.inputVolume1.set(f1)
    assert prot.validate() == []  # resampling (the default) handles the other grid


def test_model_map_on_the_grid_of_another_map(project):
    from cryoflex_scipion.protocols import ProtCryoFlexModelToMap
    closed = _import(project, "adk_1ake_A.pdb")
    grid = _model_map(project, closed, boxSize=36, samplingRate=2.5)
    prot = project.newProtocol(ProtCryoFlexModelToMap, useReferenceGrid=True, resolution=8.0)
    prot.inputStructure.set(closed)
    prot.referenceVolume.set(grid)
    # every form condition must evaluate with the pointer set (the GUI evaluates them as text)
    for name, _ in prot.iterDefinitionAttributes():
        prot.evalParamCondition(name)
    assert not prot.evalParamCondition("boxSize") and prot.evalParamCondition("referenceVolume")
    out = launch(project, prot).outputVolume
    assert out.getDim() == (36, 36, 36) and out.getSamplingRate() == 2.5
    assert np.allclose(out.getOrigin(force=True).getShifts(), grid.getOrigin(force=True).getShifts())
    bad = project.newProtocol(ProtCryoFlexModelToMap, useReferenceGrid=True)
    bad.inputStructure.set(closed)
    assert any("grid to use" in e for e in bad.validate())
