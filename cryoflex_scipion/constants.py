"""Names shared by the Scipion side of CryoFlex (no Scipion imports)."""

# Plugin variables (scipion.conf [PLUGINS] section or the environment).
CRYOFLEX_PYTHON = "CRYOFLEX_PYTHON"  # interpreter for engine subprocesses; empty: Scipion's own

# Extra attributes that carry simulated ground truth on each particle.
GT_PREFIX = "_cryoflexGt"
GT_FRAME = GT_PREFIX + "Frame"            # trajectory frame index (Integer)
GT_AMPLITUDES = GT_PREFIX + "Amplitudes"  # normal-mode amplitudes (CsvList)
GT_ANGLES = GT_PREFIX + "Angles"          # rot, tilt, psi (CsvList, degrees)
GT_ORIGIN = GT_PREFIX + "Origin"          # RELION origin x, y (CsvList, A)

# FlexHub program name of normal-mode results (Flexutils' label).
FLEX_NMA = "NMA"
