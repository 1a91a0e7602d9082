"""Output files of ``cryotrans train|predict`` (written by the command, read by the protocol and viewer)."""
from ..core.outputs import SUMMARY  # noqa: F401

GENERATED = "generated.mrc"                      # the last frame: a high-resolution estimate of the target
DISPLACEMENT = "displacement.npz"                # positions_A, displacement_A, masses, index_zyx
DISPLACEMENT_MAGNITUDE = "displacement_magnitude.mrc"
TRAJECTORY_SCRIPT = "trajectory.cxc"             # ChimeraX volume series of the frames
LOSS = "loss.csv"
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
FILES = {"generated": GENERATED, "displacement": DISPLACEMENT, "displacement_magnitude": DISPLACEMENT_MAGNITUDE,
         "trajectory": TRAJECTORY_SCRIPT, "loss": LOSS, "model": MODEL}


def frame(index):
    """Frame ``index`` (0-based) of the pseudo-trajectory."""
    return "frame_%02d.mrc" % index
