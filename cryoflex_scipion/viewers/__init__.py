"""Viewers of CryoFlex protocols (Scipion GUI)."""
from .viewers import (CryoFlexLandscapeViewer, CryoFlexNMAViewer, CryoFlexReconstructViewer,  # noqa: F401
                      CryoFlexSimulateViewer)
