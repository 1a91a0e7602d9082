"""CryoFlex: flexibility and continuous heterogeneity in cryo-EM, as a Scipion 3 plugin.

Importing this package is cheap and does not import Scipion: the engine
(``cryoflex_scipion.engine``) runs without pyworkflow/pwem, and the Scipion
``Plugin`` class is created on first access (pyworkflow looks it up as
``cryoflex_scipion.Plugin`` when it registers the plugin).
"""
__version__ = "0.1.0"

_logo = "cryoflex_logo.png"
_references = ["Harastani2020", "Hamitouche2022"]


def __getattr__(name):
    if name == "Plugin":
        from .plugin import Plugin
        return Plugin
    raise AttributeError("module 'cryoflex_scipion' has no attribute %r" % name)
