"""Viewers of CryoFlex protocols (Scipion GUI)."""
from .viewers import CryoFlexReconstructViewer, CryoFlexSimulateViewer  # noqa: F401
