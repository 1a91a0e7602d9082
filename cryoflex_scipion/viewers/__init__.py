"""Viewers of CryoFlex protocols (Scipion GUI)."""
from .viewers import (CryoFlexLandscapeViewer, CryoFlexNMAViewer, CryoFlexReconstructViewer,  # noqa: F401
                      CryoFlexSimulateViewer)
from .viewer_cryotrans import CryoFlexCryoTransViewer  # noqa: F401
