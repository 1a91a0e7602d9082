"""Names shared by the Scipion side of CryoFlex (no Scipion imports)."""

# Plugin variables (scipion.conf [PLUGINS] section or the environment).
CRYOFLEX_PYTHON = "CRYOFLEX_PYTHON"  # interpreter for engine subprocesses; empty: Scipion's own

# Extra attributes that carry simulated ground truth on each particle.
GT_PREFIX = "_cryoflexGt"
GT_FRAME = GT_PREFIX + "Frame"            # trajectory frame index (Integer)
GT_AMPLITUDES = GT_PREFIX + "Amplitudes"  # normal-mode amplitudes (CsvList)
GT_ANGLES = GT_PREFIX + "Angles"          # rot, tilt, psi (CsvList, degrees)
GT_ORIGIN = GT_PREFIX + "Origin"          # RELION origin x, y (CsvList, A)

# FlexHub (pwem SetOfParticlesFlex) program names: FlexInfo.getProgName() says what the per-particle
# coordinates (zFlex) are and which tool can decode them.
FLEX_NMA = "NMA"                # normal-mode amplitudes (HEMNMA, DeepHEMNMA): Flexutils' const.NMA
FLEX_3DFLEX = "3DFlex"          # 3DFlex latents decoded by a CryoFlex model file.  Not Flexutils' "cryoSPARC"
#                                 (const.CRYOSPARCFLEX): that label means a cryoSPARC 3D Flex job, decoded by
#                                 cryoSPARC through the FlexInfo's projectId/workSpaceId/trainJobId/projectPath
FLEX_CRYOSPHERE = "cryoSPHERE"  # cryoSPHERE latents (no Flexutils or pwem label exists)
FLEX_CRYOSPARC = "cryoSPARC"    # Flexutils' label of cryoSPARC 3D Flex latents (read, never written here)
LATENT_METHODS = (FLEX_3DFLEX, FLEX_CRYOSPHERE)  # methods whose zFlex is a latent vector of a trained model

# FlexInfo attributes of latent methods (Flexutils' names, e.g. its HetSIREN/FlexSIREN protocols).
FLEX_MODEL_PATH = "modelPath"   # String: the trained model (network) file the latents belong to
FLEX_LATENT_DIM = "latDim"      # Integer: latent dimension d (zFlex has d values)
