"""Scipion viewers of CryoFlex protocols: FSC curves, maps in ChimeraX, particle galleries."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.viewers import ChimeraView, TableView
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..constants import GT_AMPLITUDES, GT_FRAME
from ..engine.core.outputs import Reconstruct, Simulate
from ..engine.landscape import outputs as landscape_out
from ..engine.nma import outputs as nma_out
from ..protocols import ProtCryoFlexLandscape, ProtCryoFlexNMA, ProtCryoFlexReconstruct, ProtCryoFlexSimulateParticles
from .plots import (fsc_figure, gallery_figure, ground_truth_figure, landscape_figure, modes_figure,
                    read_csv_columns)


class _FigureView:
    """Draws a figure in its own matplotlib window when Scipion shows the view."""

    def __init__(self, draw, title, figsize=(7, 4.5)):
        self.draw, self.title, self.figsize = draw, title, figsize

    def show(self):
        import matplotlib.pyplot as plt
        fig = plt.figure(num=self.title, figsize=self.figsize)
        fig.clf()
        self.draw(fig)
        plt.show(block=False)


class TrainingCurvesViewer(ProtocolViewer):
    """Base of the viewers of network trainings: one figure drawn from the engine's curve CSV.
    Subclasses set ``_targets``, ``_curveFile`` (in the engine folder, from the method's outputs table),
    ``_title`` and ``_draw(columns, fig)``."""
    _environments = [DESKTOP_TKINTER]
    _curveFile, _title, _figsize = None, "training", (7, 4.5)

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showCurves", params.LabelParam, label="Training curves")

    def _getVisualizeDict(self):
        return {"showCurves": self._showCurves}

    def _showCurves(self, _=None):
        cols = read_csv_columns(self.protocol._enginePath(self._curveFile))
        return [_FigureView(lambda fig: self._draw(cols, fig), self._title, self._figsize)]

    def _draw(self, columns, fig):
        raise NotImplementedError


def chimerax_script(path, maps, apix, origin):
    """Write a ChimeraX script opening maps with their voxel size and origin."""
    with open(path, "w") as fh:
        for i, m in enumerate(maps, start=1):
            fh.write("open %s\n" % os.path.abspath(m))
            fh.write("volume #%d voxelSize %g origin %g,%g,%g\n" % ((i, apix) + tuple(origin)))
        if len(maps) > 1:
            fh.write("tile\n")
    return path


class CryoFlexReconstructViewer(ProtocolViewer):
    """FSC curves and the reconstructed map (with half-maps) in ChimeraX."""
    _label = "viewer reconstruct"
    _targets = [ProtCryoFlexReconstruct]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showFsc", params.LabelParam, label="FSC curves")
        form.addParam("showMap", params.LabelParam, label="Map and half-maps in ChimeraX")

    def _getVisualizeDict(self):
        return {"showFsc": self._showFsc, "showMap": self._showMap}

    def _showFsc(self, _=None):
        cols = read_csv_columns(self.protocol._enginePath(Reconstruct.FSC))
        curves = [cols["fsc_half_maps"]]
        labels = ["half-maps"]
        if "fsc_reference" in cols:
            curves.append(cols["fsc_reference"])
            labels.append("map vs reference")
        return [_FigureView(lambda fig: fsc_figure(cols["frequency_1_per_A"], curves, labels, fig=fig), "CryoFlex FSC")]

    def _showMap(self, _=None):
        vol = self.protocol.outputVolume
        maps = [self.protocol._enginePath(f) for f in (Reconstruct.MAP,) + Reconstruct.HALF_MAPS]
        script = chimerax_script(self.protocol._getExtraPath("show_map.cxc"), maps, vol.getSamplingRate(),
                                 vol.getOrigin(force=True).getShifts())
        return [ChimeraView(script)]


class CryoFlexSimulateViewer(ProtocolViewer):
    """Simulated particles and the distribution of their ground truth."""
    _label = "viewer simulate"
    _targets = [ProtCryoFlexSimulateParticles]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("nImages", params.IntParam, default=24, label="Particles in the gallery")
        form.addParam("showGallery", params.LabelParam, label="Particle gallery")
        form.addParam("showTruth", params.LabelParam, label="Ground-truth distributions")
        form.addParam("showReference", params.LabelParam, label="Ground-truth map and model in ChimeraX")

    def _getVisualizeDict(self):
        return {"showGallery": self._showGallery, "showTruth": self._showTruth, "showReference": self._showReference}

    def _showGallery(self, _=None):
        from ..engine.core.io.mrc import open_stack
        handle, _info = open_stack(self.protocol._enginePath(Simulate.STACK))
        try:
            images = np.array(handle.data[: max(1, self.nImages.get())])
        finally:
            handle.close()
        titles = ["%d" % (i + 1) for i in range(len(images))]
        return [_FigureView(lambda fig: gallery_figure(images, titles, fig=fig), "CryoFlex simulated particles",
                            figsize=(12, 1.5 * np.ceil(len(images) / 8)))]

    def _showTruth(self, _=None):
        truth = read_csv_columns(self.protocol._enginePath(Simulate.GROUND_TRUTH))
        return [_FigureView(lambda fig: ground_truth_figure(truth, fig=fig), "CryoFlex ground truth", figsize=(12, 3.5))]

    def _showReference(self, _=None):
        vol = self.protocol.outputVolume
        script = self.protocol._getExtraPath("show_reference.cxc")
        chimerax_script(script, [self.protocol._enginePath(Simulate.REFERENCE_MAP)], vol.getSamplingRate(),
                        vol.getOrigin(force=True).getShifts())
        structure = self.protocol._modelStructure()
        if structure is not None:
            with open(script, "a") as fh:
                fh.write("open %s\n" % os.path.abspath(structure.getFileName()))
        return [ChimeraView(script)]


class CryoFlexNMAViewer(ProtocolViewer):
    """Eigenvalues, collectivity, the mode table, and mode animations in ChimeraX."""
    _label = "viewer normal modes"
    _targets = [ProtCryoFlexNMA]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showPlots", params.LabelParam, label="Eigenvalues and collectivity")
        form.addParam("showTable", params.LabelParam, label="Mode table")
        form.addParam("modeNumber", params.IntParam, default=7, label="Mode to animate (7 = first non-rigid)")
        form.addParam("showAnimation", params.LabelParam, label="Animation in ChimeraX")

    def _getVisualizeDict(self):
        return {"showPlots": self._showPlots, "showTable": self._showTable, "showAnimation": self._showAnimation}

    def _table(self):
        return read_csv_columns(self.protocol._enginePath(nma_out.MODES_TABLE))

    def _showPlots(self, _=None):
        table = self._table()
        threshold = self.protocol.collectivityThreshold.get()
        return [_FigureView(lambda fig: modes_figure(table, threshold, fig=fig), "CryoFlex normal modes",
                            figsize=(10, 3.8))]

    def _showTable(self, _=None):
        t = self._table()
        rows = [("%d" % m, "%.5g" % e, "%.4f" % c, "%.4f" % s, "yes" if on > 0 else "no")
                for m, e, c, s, on in zip(t["mode"], t["eigenvalue"], t["collectivity"], t["score"], t["enabled"])]
        return [TableView(["mode", "eigenvalue", "collectivity", "score", "enabled"], rows, "", "Normal modes")]

    def _showAnimation(self, _=None):
        mode = self.modeNumber.get()
        path = self.protocol._enginePath(nma_out.animation(mode))
        if not os.path.exists(path):
            self.showError("No animation for mode %d (modes 7-%d have one)." % (mode, len(self._table()["mode"])))
            return []
        script = self.protocol._getExtraPath("animate_mode_%d.cxc" % mode)
        with open(script, "w") as fh:
            fh.write("open %s coordsets true\ncoordset #1 loop 20 bounce true\n" % os.path.abspath(path))
        return [ChimeraView(script)]


class CryoFlexLandscapeViewer(ProtocolViewer):
    """The landscape (by group or by ground truth), group FSC curves, group maps and animations."""
    _label = "viewer landscape"
    _targets = [ProtCryoFlexLandscape]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("colourBy", params.EnumParam, default=0, choices=["group", "ground truth (simulations)"],
                      label="Colour particles by")
        form.addParam("showLandscape", params.LabelParam, label="Landscape")
        form.addParam("showFsc", params.LabelParam, label="FSC of the group reconstructions")
        form.addParam("showMaps", params.LabelParam, label="Group maps in ChimeraX")
        form.addParam("axis", params.IntParam, default=1, label="Axis to animate (normal modes)")
        form.addParam("showAnimation", params.LabelParam, label="Animation along the axis in ChimeraX")

    def _getVisualizeDict(self):
        return {"showLandscape": self._showLandscape, "showFsc": self._showFsc, "showMaps": self._showMaps,
                "showAnimation": self._showAnimation}

    def _ground_truth(self):
        """First ground-truth amplitude, or the structure index, of simulated particles (else None)."""
        values = []
        for p in self.protocol.inputParticles.get().iterItems(orderBy="id"):
            if hasattr(p, GT_AMPLITUDES):
                values.append(float(list(getattr(p, GT_AMPLITUDES))[0]))
            elif hasattr(p, GT_FRAME):
                values.append(float(getattr(p, GT_FRAME).get()))
            else:
                return None
        return np.array(values)

    def _showLandscape(self, _=None):
        result = np.load(self.protocol._enginePath(landscape_out.LANDSCAPE))
        reduced, groups = result["reduced"], result["groups"]
        colour = label = None
        if self.colourBy.get() == 1:
            colour = self._ground_truth()
            if colour is None:
                self.showError("These particles carry no ground truth (only simulated particles do).")
                return []
            label = "ground truth"
        return [_FigureView(lambda fig: landscape_figure(reduced, groups, colour, label, fig=fig),
                            "CryoFlex landscape", figsize=(12 if reduced.shape[1] >= 3 else 6, 4.5))]

    def _group_folders(self):
        folders, g = [], 1
        while os.path.isdir(self.protocol._enginePath(landscape_out.group_folder(g))):
            folders.append(self.protocol._enginePath(landscape_out.group_folder(g)))
            g += 1
        return folders

    def _showFsc(self, _=None):
        curves, labels, freqs = [], [], None
        for i, folder in enumerate(self._group_folders()):
            fn = os.path.join(folder, landscape_out.GROUP_FSC)
            if os.path.exists(fn):
                cols = read_csv_columns(fn)
                freqs = cols["frequency_1_per_A"]
                curves.append(cols["fsc_half_maps"])
                labels.append("group %d" % (i + 1))
        if not curves:
            self.showError("No group was reconstructed.")
            return []
        return [_FigureView(lambda fig: fsc_figure(freqs, curves, labels, title="half-map FSC per group", fig=fig),
                            "CryoFlex group FSC")]

    def _showMaps(self, _=None):
        maps = [os.path.join(f, landscape_out.GROUP_MAP) for f in self._group_folders()
                if os.path.exists(os.path.join(f, landscape_out.GROUP_MAP))]
        if not maps:
            self.showError("No group was reconstructed.")
            return []
        vols = self.protocol.outputVolumes
        first = vols.getFirstItem()
        script = chimerax_script(self.protocol._getExtraPath("show_groups.cxc"), maps, vols.getSamplingRate(),
                                 first.getOrigin(force=True).getShifts())
        return [ChimeraView(script)]

    def _showAnimation(self, _=None):
        path = self.protocol._enginePath(landscape_out.animation(self.axis.get()))
        if not os.path.exists(path):
            self.showError("No animation for axis %d (animations need normal modes as input)." % self.axis.get())
            return []
        script = self.protocol._getExtraPath("animate_axis_%d.cxc" % self.axis.get())
        with open(script, "w") as fh:
            fh.write("open %s coordsets true\ncoordset #1 loop 20 bounce true\n" % os.path.abspath(path))
        return [ChimeraView(script)]
