"""Output files of ``landscape`` (written by the command, read by the protocol and the viewers)."""
from ..core.outputs import SUMMARY, Reconstruct  # noqa: F401

LANDSCAPE = "landscape.npz"    # reduced coordinates, groups, projector arrays
GROUPS = "groups.csv"          # one row per group: size, centre, mean features, resolutions
PROJECTOR = "projector.npz"
ANIMATIONS = "animations"      # folder of axis_<k>.pdb (normal modes only)
GROUP_MAP = Reconstruct.MAP    # inside group_<g>/: a reconstruction's files
GROUP_HALF_MAPS = Reconstruct.HALF_MAPS
GROUP_FSC = Reconstruct.FSC
GROUP_CENTROID = "centroid.pdb"
FILES = {"landscape": LANDSCAPE, "groups": GROUPS, "projector": PROJECTOR}


def group_folder(group):
    """Folder of group ``group`` (1-based), relative to the output folder."""
    return "group_%d" % group


def animation(axis):
    """Animation along axis ``axis`` (1-based), relative to the output folder."""
    return "%s/axis_%d.pdb" % (ANIMATIONS, axis)
