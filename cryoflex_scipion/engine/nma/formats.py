"""Files of normal modes for other programs: NMD (VMD's NMWiz) and multi-model PDB animations."""
import os

import numpy as np

from ..core.atoms import deform

__all__ = ["write_nmd", "write_animation", "pdb_lines"]


def write_nmd(path, model, vectors, eigenvalues, first=6, title="cryoflex_modes"):
    """NMWiz file of the non-rigid modes, each scaled by 1/sqrt(eigenvalue) as ProDy's writeNMD does."""
    with open(path, "w") as fh:
        fh.write("nmwiz_load %s\n" % os.path.abspath(path))
        fh.write("name %s\n" % title.replace(" ", "_"))
        fh.write("atomnames %s\n" % " ".join(n.strip() or "X" for n in model.names))
        fh.write("resnames %s\n" % " ".join(r.strip() or "UNK" for r in model.resnames))
        fh.write("chainids %s\n" % " ".join(c.strip() or "A" for c in model.chains))
        fh.write("resids %s\n" % " ".join(str(int(r)) for r in model.resids))
        fh.write("bfactors %s\n" % " ".join("%.2f" % b for b in model.bfactors))
        fh.write("coordinates %s\n" % " ".join("%.3f" % c for c in model.coords.ravel()))
        for k in range(first, len(vectors)):
            scale = 1.0 / np.sqrt(eigenvalues[k]) if eigenvalues[k] > 0 else 1.0
            fh.write("mode %d %.2f %s\n" % (k + 1, scale, " ".join("%.3f" % v for v in vectors[k].ravel())))


def pdb_lines(model, coords):
    """ATOM records of ``model``'s atoms at ``coords`` (PDB columns, element in 77-78)."""
    lines = []
    for i in range(len(coords)):
        name = model.names[i].strip()
        name = name if len(name) >= 4 else " " + name.ljust(3)
        x, y, z = coords[i]
        lines.append("ATOM  %5d %-4s %3s %1s%4d    %8.3f%8.3f%8.3f  1.00%6.2f          %2s"
                     % ((i + 1) % 100000, name[:4], model.resnames[i][:3], (model.chains[i] or "A")[:1],
                        int(model.resids[i]) % 10000, x, y, z, min(model.bfactors[i], 999.99),
                        str(model.elements[i])[:2].rjust(2)))
    return lines


def write_animation(path, model, vector, amplitude, n_frames=10):
    """Multi-model PDB moving ``model`` along one mode from -amplitude to +amplitude and back."""
    ramp = np.linspace(-amplitude, amplitude, n_frames)
    steps = np.concatenate([ramp, ramp[-2:0:-1]])
    with open(path, "w") as fh:
        for m, a in enumerate(steps, start=1):
            coords = deform(model.coords, vector[None], np.array([a]))
            fh.write("MODEL     %4d\n" % m)
            fh.write("\n".join(pdb_lines(model, coords)))
            fh.write("\nENDMDL\n")
        fh.write("END\n")
