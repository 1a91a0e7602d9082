"""Output files of ``defmap predict|train`` (written by the command, read by the protocols and viewers)."""
from ..core.outputs import SUMMARY  # noqa: F401

# predict
MAP = "defmap.mrc"              # predicted log10 RMSF on the input grid
MAP_15 = "defmap_1.5A.mrc"      # the same on the 1.5 A grid
ATOMS = "atoms.csv"
RESIDUES = "residues.csv"
PDB = "defmap_atoms.pdb"        # dynamics_defmap in the B-factor column
PREDICT_FILES = {"map": MAP, "map_1.5A": MAP_15}
PREDICT_MODEL_FILES = {"atoms": ATOMS, "residues": RESIDUES, "pdb": PDB}

# train
MODEL = "defmap_model.pt"
CHECKPOINT = "checkpoint.pt"
CURVE = "curve"                 # prefix of curve.csv / curve.json
TRAIN_FILES = {"model": MODEL, "curve": CURVE + ".csv"}
