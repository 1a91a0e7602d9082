"""Engine commands: each module defines ``add_args(parser)`` and ``main(args)``.

New methods register here, one module per command, so that
``python -m cryoflex_scipion.engine <command>`` finds them.
"""
COMMANDS = {
    "simulate": "cryoflex_scipion.engine.commands.simulate",
    "reconstruct": "cryoflex_scipion.engine.commands.reconstruct",
    "atoms": "cryoflex_scipion.engine.commands.atoms",
    "nma": "cryoflex_scipion.engine.commands.nma",
    "pseudoatoms": "cryoflex_scipion.engine.commands.pseudoatoms",
    "hemnma": "cryoflex_scipion.engine.commands.hemnma",
    "landscape": "cryoflex_scipion.engine.commands.landscape",
    "defmap": "cryoflex_scipion.engine.commands.defmap",
    "modelmap": "cryoflex_scipion.engine.commands.modelmap",
    "cryotrans": "cryoflex_scipion.engine.commands.cryotrans",
    "deephemnma": "cryoflex_scipion.engine.commands.deephemnma",
    "yardstick": "cryoflex_scipion.engine.commands.yardstick",
}
