"""Viewers of CryoFlex protocols (Scipion GUI)."""
from .viewers import (CryoFlexLandscapeViewer, CryoFlexNMAViewer, CryoFlexReconstructViewer,  # noqa: F401
                      CryoFlexSimulateViewer)
from .viewer_cryotrans import CryoFlexCryoTransViewer  # noqa: F401
from .viewer_defmap import CryoFlexDefmapPredictViewer, CryoFlexDefmapTrainViewer  # noqa: F401
from .viewer_deephemnma import CryoFlexDeepHEMNMATrainViewer  # noqa: F401
