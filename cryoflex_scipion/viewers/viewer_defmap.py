"""Viewers of the DEFMap protocols: residue profile, ChimeraX colouring, training curves."""
import os

import pyworkflow.protocol.params as params
from pwem.viewers import ChimeraView
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..engine.defmap import outputs as OUT
from ..protocols import ProtCryoFlexDefmapPredict, ProtCryoFlexDefmapTrain
from ..protocols.protocol_defmap import INPUT_MAP
from .plots import read_csv_rows, residue_profile_figure, training_curves_figure
from .viewers import TrainingCurvesViewer, _FigureView


def defmap_colour_script(path, structure=None, dynamics_map=None, input_map=None, apix=None, origin=None,
                         level=None, z_range=2.0):
    """ChimeraX script: the model coloured by Dynamics^DEFMap (B-factor column, blue rigid to red
    flexible) and/or the input map's surface coloured by the predicted log10 RMSF map."""
    with open(path, "w") as fh:
        model_id = 0
        if structure:
            model_id += 1
            fh.write("open %s\n" % os.path.abspath(structure))
            fh.write("color bfactor #%d palette blue:white:red range %g,%g\n" % (model_id, -z_range, z_range))
            fh.write("key blue:-%g white:0 red:+%g pos 0.1,0.08 size 0.3,0.03\n" % (z_range, z_range))
        if dynamics_map and input_map:
            first = model_id + 1
            for i, m in enumerate((input_map, dynamics_map)):
                fh.write("open %s\nvolume #%d voxelSize %g origin %g,%g,%g\n"
                         % ((os.path.abspath(m), first + i, apix) + tuple(origin)))
            fh.write("volume #%d style surface transparency 0.5%s\nvolume #%d hide\n"
                     % (first, " level %g" % level if level is not None else "", first + 1))
            fh.write("color sample #%d map #%d palette blue:white:red\n" % (first, first + 1))
    return path


class CryoFlexDefmapPredictViewer(ProtocolViewer):
    """Residue profile (DEFMap vs B-factors) and the model or map coloured by dynamics in ChimeraX."""
    _label = "viewer defmap"
    _targets = [ProtCryoFlexDefmapPredict]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showProfile", params.LabelParam, label="Dynamics per residue")
        form.addParam("showModel", params.LabelParam, label="Model coloured by dynamics (ChimeraX)")
        form.addParam("showMap", params.LabelParam, label="Map surface coloured by predicted RMSF (ChimeraX)")

    def _getVisualizeDict(self):
        return {"showProfile": self._showProfile, "showModel": self._showModel, "showMap": self._showMap}

    def _showProfile(self, _=None):
        path = self.protocol._enginePath(OUT.RESIDUES)
        if not os.path.exists(path):
            return [self.errorMessage("No atomic model was given: there is no residue profile.")]
        rows = read_csv_rows(path)
        return [_FigureView(lambda fig: residue_profile_figure(rows, fig=fig), "DEFMap residues", (9, 4))]

    def _showModel(self, _=None):
        if not hasattr(self.protocol, "outputStructure"):
            return [self.errorMessage("No atomic model was given.")]
        script = defmap_colour_script(self.protocol._getExtraPath("defmap_model.cxc"),
                                      structure=self.protocol.outputStructure.getFileName())
        return [ChimeraView(script)]

    def _showMap(self, _=None):
        vol = self.protocol.outputVolume
        s = self.protocol.readEngineSummary()
        level = s["box_mean"] + s["box_std"] if s else None
        script = defmap_colour_script(self.protocol._getExtraPath("defmap_map.cxc"),
                                      dynamics_map=vol.getFileName(), input_map=self.protocol._enginePath(INPUT_MAP),
                                      apix=vol.getSamplingRate(), origin=vol.getOrigin(force=True).getShifts(),
                                      level=level)
        return [ChimeraView(script)]


class CryoFlexDefmapTrainViewer(TrainingCurvesViewer):
    """Training and validation curves of a DEFMap training."""
    _label = "viewer defmap training"
    _targets = [ProtCryoFlexDefmapTrain]
    _curveFile, _title = OUT.CURVE + ".csv", "DEFMap training"

    def _draw(self, columns, fig):
        return training_curves_figure(columns, title="DEFMap training", fig=fig)
