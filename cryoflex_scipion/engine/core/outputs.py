"""Output file names of the engine's tool commands, one table each (``simulate``, ``reconstruct``).

The commands write these names, list them in their ``summary.json`` (``files``), and the Scipion
protocols and viewers read them from here: a name is written once.  Method packages have their own
``outputs`` module (e.g. :mod:`..hemnma.outputs`).
"""

SUMMARY = "summary.json"  # every command's JSON summary


class Simulate:
    """``simulate``: particles with ground truth."""
    STACK = "particles.mrcs"
    STAR = "particles.star"
    GROUND_TRUTH = "ground_truth.csv"
    REFERENCE_MAP = "reference.mrc"
    FILES = {"stack": STACK, "star": STAR, "ground_truth": GROUND_TRUTH, "reference_map": REFERENCE_MAP}


class Reconstruct:
    """``reconstruct``: map, half-maps, FSC."""
    MAP = "map.mrc"
    HALF_MAPS = ("half1.mrc", "half2.mrc")
    FSC = "fsc.csv"
    FILES = {"map": MAP, "half1": HALF_MAPS[0], "half2": HALF_MAPS[1], "fsc": FSC}
