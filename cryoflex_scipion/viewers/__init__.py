"""Viewers of CryoFlex protocols (Scipion GUI)."""
from .viewers import CryoFlexNMAViewer, CryoFlexReconstructViewer, CryoFlexSimulateViewer  # noqa: F401
