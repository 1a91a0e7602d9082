"""CryoFlex engine: numerical methods in numpy/torch, independent of Scipion.

Run ``python -m cryoflex_scipion.engine --help`` for the commands.  Nothing
here imports pyworkflow or pwem, so the engine runs on a GPU node, in another
Python environment, or by hand on RELION/cryoSPARC exports.
"""
