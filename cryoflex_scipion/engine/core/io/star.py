"""STAR files (RELION 3.0 / 3.1): read and write data blocks, fast enough for 10^6 rows.

A file is an ordered ``{block name: StarBlock}``.  A block is either a loop
(columns of equal length, kept as numpy string arrays so numbers round-trip
exactly as written) or a list of ``key value`` pairs.  Column names are stored
without the leading underscore (``rlnImageName``).
"""
import io
import os
import shlex
from collections import OrderedDict

import numpy as np

from ..errors import EngineInputError

__all__ = ["StarBlock", "StarError", "read_star", "parse_star", "write_star", "format_star"]


class StarError(EngineInputError):
    pass


class StarBlock:
    """One ``data_`` block: ``columns`` (ordered names) and ``values`` (name -> array)."""

    def __init__(self, name, columns=None, values=None, loop=True):
        self.name = name
        self.loop = loop
        self.columns = list(columns or [])
        self.values = OrderedDict((c, values[c]) for c in self.columns) if values else OrderedDict()

    def __len__(self):
        return len(self.values[self.columns[0]]) if self.columns and self.loop else 0

    def __contains__(self, column):
        return column in self.values

    def get(self, column, default=None):
        return self.values.get(column, default)

    def strings(self, column):
        return np.asarray(self.values[column]).astype(str)

    def floats(self, column):
        try:
            return np.asarray(self.values[column], dtype=np.float64)
        except ValueError as exc:
            raise StarError("column %s of block %s is not numeric (%s)" % (column, self.name, exc)) from None

    def ints(self, column):
        return np.rint(self.floats(column)).astype(np.int64)

    def set(self, column, values):
        if column not in self.values:
            self.columns.append(column)
        self.values[column] = values

    def remove(self, column):
        if column in self.values:
            self.columns.remove(column)
            del self.values[column]

    def subset(self, index):
        return StarBlock(self.name, self.columns, {c: np.asarray(v)[index] for c, v in self.values.items()}, self.loop)


def _tokens(line):
    return shlex.split(line) if ('"' in line or "'" in line) else line.split()


def read_star(path):
    """Parse a STAR file into an ordered dict of :class:`StarBlock`."""
    if not os.path.exists(path):
        raise StarError("%s: file not found" % path)
    with open(path) as fh:
        return parse_star(fh.read(), path)


def parse_star(text, path="<text>"):
    """Parse STAR text (e.g. the optics table Scipion keeps in an acquisition) into blocks; ``path`` names
    the source in error messages."""
    lines = text.splitlines()
    blocks = OrderedDict()
    i, n = 0, len(lines)
    block = None
    while i < n:
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            block = StarBlock(line[5:], loop=False)
            blocks[block.name] = block
            continue
        if block is None:
            raise StarError("%s:%d: content before any data_ block" % (path, i))
        if line.startswith("loop_"):
            block.loop = True
            columns = []
            while i < n:
                head = lines[i].strip()
                if head.startswith("_"):
                    columns.append(head.split()[0][1:])
                    i += 1
                elif not head or head.startswith("#"):
                    i += 1
                else:
                    break
            rows = []
            while i < n:
                row = lines[i].strip()
                if row.startswith("data_") or row.startswith("loop_") or row.startswith("_"):
                    break
                i += 1
                if not row or row.startswith("#"):
                    continue
                tok = _tokens(row)
                if len(tok) != len(columns):
                    raise StarError("%s:%d: %d values for %d columns in block %s"
                                    % (path, i, len(tok), len(columns), block.name))
                rows.append(tok)
            table = np.array(rows, dtype=str).reshape(len(rows), len(columns))
            block.columns = columns
            block.values = OrderedDict((c, table[:, j]) for j, c in enumerate(columns))
        elif line.startswith("_"):
            tok = _tokens(line)
            block.set(tok[0][1:], tok[1] if len(tok) > 1 else "")
        else:
            raise StarError("%s:%d: unexpected line %r" % (path, i, line[:60]))
    return blocks


def _format_column(values):
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        # Shortest representation that reads back to the same float64: exact round trips.
        return arr.astype(np.float64).astype(str)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64).astype(str)
    out = arr.astype(str)
    empty = np.char.str_len(out) == 0
    if empty.any():
        out = np.where(empty, '""', out)
    return out


def write_star(path, blocks, comment=None):
    """Write blocks (dict or list of :class:`StarBlock`) in RELION 3.1 layout."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        _write_blocks(fh, blocks, comment)


def format_star(blocks, comment=None):
    """The STAR text of ``blocks``, as :func:`write_star` would write it."""
    out = io.StringIO()
    _write_blocks(out, blocks, comment)
    return out.getvalue()


def _write_blocks(fh, blocks, comment):
    if isinstance(blocks, dict):
        blocks = list(blocks.values())
    fh.write("\n# version 30001\n" if comment is None else "\n# %s\n" % comment)
    for block in blocks:
        fh.write("\ndata_%s\n\n" % block.name)
        if not block.loop:
            for c in block.columns:
                fh.write("_%s %s\n" % (c, block.values[c]))
            continue
        fh.write("loop_ \n")
        for j, c in enumerate(block.columns):
            fh.write("_%s #%d \n" % (c, j + 1))
        if not block.columns:
            continue
        cols = [_format_column(block.values[c]) for c in block.columns]
        n = len(cols[0])
        text = np.full(n, "", dtype=object)
        for j, col in enumerate(cols):
            text = text + col.astype(object) + (" " if j + 1 < len(cols) else "")
        fh.write("\n".join(text.tolist()))
        fh.write("\n")
