"""Output files of ``nma`` and ``pseudoatoms`` (written by the commands, read by the protocols and viewers)."""
from ..core.outputs import SUMMARY  # noqa: F401

# nma
MODES = "modes.npy"                # (modes, atoms, 3), unit norm over 3N
MODES_TABLE = "modes.csv"          # mode, eigenvalue, collectivity, score, enabled
FLUCTUATIONS = "fluctuations.csv"
NMD = "modes.nmd"
ATOMS = "atoms.pdb"                # the atoms the modes refer to
ANIMATIONS = "animations"
NMA_FILES = {"modes": MODES, "table": MODES_TABLE, "fluctuations": FLUCTUATIONS, "nmd": NMD, "atoms": ATOMS,
             "animations": ANIMATIONS + "/mode_N.pdb"}

# pseudoatoms
PSEUDO_PDB = "pseudoatoms.pdb"
PSEUDO_NPZ = "pseudoatoms.npz"
PSEUDO_MAP = "pseudoatoms_map.mrc"
PSEUDO_FILES = {"pdb": PSEUDO_PDB, "npz": PSEUDO_NPZ, "map": PSEUDO_MAP}


def animation(mode):
    """Animation of mode ``mode`` (1-based), relative to the output folder."""
    return "%s/mode_%d.pdb" % (ANIMATIONS, mode)
