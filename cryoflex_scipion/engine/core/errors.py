"""The engine's one exception for unusable input or settings (no dependencies: file readers import it).

Its subclasses name where the problem was found (``StarError``, ``MRCError``...); the entry point prints any
of them as one ``ERROR:`` line with exit status 2.
"""

__all__ = ["EngineInputError"]


class EngineInputError(ValueError):
    """Unusable input or settings, with a message meant for the user (the CLI prints it on one line)."""
