"""Viewer of the DeepHEMNMA training protocol: training and validation curves."""
from ..engine.deephemnma import outputs as OUT
from ..protocols import ProtCryoFlexDeepHEMNMATrain
from .plots import deephemnma_curves_figure
from .viewers import TrainingCurvesViewer


class CryoFlexDeepHEMNMATrainViewer(TrainingCurvesViewer):
    """Training and validation curves: loss, and the validation errors of amplitudes, angles and shifts."""
    _label = "viewer deephemnma training"
    _targets = [ProtCryoFlexDeepHEMNMATrain]
    _curveFile, _title, _figsize = OUT.CURVES + ".csv", "DeepHEMNMA training", (11, 4)

    def _draw(self, columns, fig):
        return deephemnma_curves_figure(columns, fig=fig)
