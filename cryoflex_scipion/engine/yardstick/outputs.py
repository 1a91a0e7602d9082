"""Output files of ``yardstick build`` (written by the build, read by the scoring and the benchmark)."""
from ..core.outputs import SUMMARY, Simulate  # noqa: F401

STACK = Simulate.STACK                  # particles.mrcs
STAR = Simulate.STAR                    # particles.star (RELION 3.1: true poses and CTF)
GROUND_TRUTH = Simulate.GROUND_TRUTH    # ground_truth.csv: poses, defocus, frame, lid_nmp_A per particle
REFERENCE_MAP = Simulate.REFERENCE_MAP  # reference.mrc: map of the reference model (frame 0)
REFERENCE_ATOMS = "reference.npz"       # the reference's heavy atoms (engine .npz, for nma/hemnma)
DATASET = "dataset.npz"                 # frame coordinates, weights, centre, box: maps on the fly
FRAMES = "frames.csv"                   # per frame: lid_nmp_A, particles, RMSD to the reference
GT_MAPS = "gt_maps"                     # folder of ground-truth maps, one per frame
FILES = {"stack": STACK, "star": STAR, "ground_truth": GROUND_TRUTH, "reference_map": REFERENCE_MAP,
         "reference_atoms": REFERENCE_ATOMS, "dataset": DATASET, "frames": FRAMES}


def gt_map_file(frame):
    """Ground-truth map of trajectory frame ``frame`` (0-based), relative to the output folder."""
    return "%s/frame_%03d.mrc" % (GT_MAPS, frame)
