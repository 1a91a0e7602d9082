"""Viewer of the CryoTRANS protocol: trajectory in ChimeraX, loss curve, FSC, displacement colouring."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.viewers import ChimeraView
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..engine.core.metrics import fsc_frequencies
from ..engine.cryotrans import outputs as OUT
from ..protocols import ProtCryoFlexCryoTrans
from ..protocols.protocol_cryotrans import MAP0
from .plots import fsc_figure, loss_figure, read_csv_columns
from .viewers import _FigureView


def trajectory_script(path, frames, apix, origin, level=None):
    """ChimeraX script that opens the frames as one volume series and plays it back and forth."""
    with open(path, "w") as fh:
        fh.write("open %s vseries true\n" % " ".join(os.path.abspath(f) for f in frames))
        fh.write("volume #1 voxelSize %g origin %g,%g,%g style surface%s\n"
                 % ((apix,) + tuple(origin) + (" level %g" % level if level is not None else "",)))
        fh.write("vseries play #1 loop true direction oscillate\n")
    return path


def displacement_script(path, initial, displacement, apix, origin, level=None, max_displacement=None):
    """ChimeraX script colouring the initial map's surface by the displacement of its voxels (A)."""
    with open(path, "w") as fh:
        for i, m in enumerate((initial, displacement), start=1):
            fh.write("open %s\nvolume #%d voxelSize %g origin %g,%g,%g\n" % ((os.path.abspath(m), i, apix) + tuple(origin)))
        fh.write("volume #1 style surface%s\nvolume #2 hide\n" % (" level %g" % level if level is not None else ""))
        top = max_displacement or 10.0
        fh.write("color sample #1 map #2 palette blue:white:red range 0,%g\n" % top)
        fh.write("key blue:0 white: red:%.0fA pos 0.1,0.08 size 0.3,0.03\n" % top)
    return path


class CryoFlexCryoTransViewer(ProtocolViewer):
    """Pseudo-trajectory as a volume series, loss curve, FSC against the target, displacement colours."""
    _label = "viewer cryotrans"
    _targets = [ProtCryoFlexCryoTrans]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showTrajectory", params.LabelParam, label="Trajectory in ChimeraX (volume series)")
        form.addParam("showLoss", params.LabelParam, label="Loss curve")
        form.addParam("showFsc", params.LabelParam, label="FSC against the target")
        form.addParam("showDisplacement", params.LabelParam, label="f0 coloured by displacement in ChimeraX")

    def _getVisualizeDict(self):
        return {"showTrajectory": self._showTrajectory, "showLoss": self._showLoss, "showFsc": self._showFsc,
                "showDisplacement": self._showDisplacement}

    def _grid(self):
        s = self.protocol.readEngineSummary()
        vol = self.protocol.outputVolume
        return s, vol.getSamplingRate(), vol.getOrigin(force=True).getShifts()

    def _showTrajectory(self, _=None):
        s, apix, origin = self._grid()
        frames = [self.protocol._enginePath(OUT.frame(i)) for i in range(s["frames"])]
        script = trajectory_script(self.protocol._getExtraPath("trajectory.cxc"), frames, apix, origin,
                                   s["threshold0"])
        return [ChimeraView(script)]

    def _showLoss(self, _=None):
        cols = read_csv_columns(self.protocol._enginePath(OUT.LOSS))
        return [_FigureView(lambda fig: loss_figure(cols, fig=fig), "CryoTRANS loss")]

    def _showFsc(self, _=None):
        s, apix, _ = self._grid()
        freqs = fsc_frequencies(s["size"], apix)
        curves = [np.asarray(s["fsc_generated_target"]["curve"]), np.asarray(s["fsc_initial_target"]["curve"])]
        return [_FigureView(lambda fig: fsc_figure(freqs, curves, ["generated vs target", "f0 vs target"], fig=fig),
                            "CryoTRANS FSC")]

    def _showDisplacement(self, _=None):
        s, apix, origin = self._grid()
        script = displacement_script(self.protocol._getExtraPath("displacement.cxc"),
                                     self.protocol._enginePath(MAP0),
                                     self.protocol._enginePath(OUT.DISPLACEMENT_MAGNITUDE), apix, origin,
                                     s["threshold0"], s["displacement_max_A"])
        return [ChimeraView(script)]
