"""Output files of ``deephemnma train|predict`` (written by the command, read by the protocols and viewers)."""
from ..core.outputs import SUMMARY  # noqa: F401

# train
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
CURVES = "curves"               # prefix of curves.csv / curves.json
TRAINING_SET = "training_set.npz"
TRAIN_FILES = {"model": MODEL, "checkpoint": CHECKPOINT, "curves": CURVES + ".csv", "training_set": TRAINING_SET}

# predict
STAR = "particles.star"
RESULTS = "results.npz"
PREDICT_FILES = {"star": STAR, "results": RESULTS}
