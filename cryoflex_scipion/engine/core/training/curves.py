"""Training curves: one record per epoch, as ``prefix.json`` (every key) and ``prefix.csv`` (the
columns the trainer names), both written atomically (the viewers read them while a run goes on)."""
import json
import os

__all__ = ["save_curves"]


def _write_atomic(path, text):
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def _cell(value):
    if value is None:
        return ""
    return "%.6g" % value if isinstance(value, float) else str(value)


def save_curves(prefix, history, keys=None):
    """Write ``history`` (a list of dicts) to ``prefix.json`` and ``prefix.csv``; ``keys``: the CSV
    columns (default: every key, in order of first appearance); absent values are empty cells.
    Nothing is written without a ``prefix``."""
    if not prefix:
        return
    if keys is None:
        keys = list(dict.fromkeys(k for record in history for k in record))
    _write_atomic(prefix + ".json", json.dumps(history, indent=1))
    lines = [",".join(keys)] + [",".join(_cell(record.get(k)) for k in keys) for record in history]
    _write_atomic(prefix + ".csv", "\n".join(lines) + "\n")
