"""Particle metadata tables: RELION 3.0/3.1 STAR and cryoSPARC .cs <-> arrays.

:class:`ParticleTable` holds, per particle, the image reference (stack file
and 0-based index), pixel size and box (from the optics group), optional pose
(ZYZ Euler angles, RELION origin in A) and optional CTF.  Columns that the
engine does not interpret are kept and written back unchanged, so a round
trip through the engine loses nothing.

The conventions of the pose are those of :mod:`..geometry`.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ..ctf import CTFParams
from ..geometry import euler_to_matrix, origin_to_shift
from .star import StarBlock, StarError, read_star, write_star

__all__ = ["ParticleTable", "read_particles", "check_stacks", "resolve_path", "AMPLITUDE_COLUMN"]

# Normal-mode amplitude columns of CryoFlex STAR files, named by mode number (cryoflexAmplitude7, ...).
AMPLITUDE_COLUMN = "cryoflexAmplitude%d"

_POSE = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_ORIGIN_A = ("rlnOriginXAngst", "rlnOriginYAngst")
_ORIGIN_PX = ("rlnOriginX", "rlnOriginY")
_CTF_COLUMNS = {  # STAR column -> CTFParams field
    "rlnDefocusU": "defocus_u", "rlnDefocusV": "defocus_v", "rlnDefocusAngle": "defocus_angle",
    "rlnVoltage": "voltage", "rlnSphericalAberration": "cs", "rlnAmplitudeContrast": "amplitude_contrast",
    "rlnPhaseShift": "phase_shift", "rlnCtfBfactor": "bfactor", "rlnCtfScalefactor": "scale",
}
_OPTICS_CTF = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
_HANDLED = set(_POSE) | set(_ORIGIN_A) | set(_ORIGIN_PX) | set(_CTF_COLUMNS) | {"rlnImageName", "rlnOpticsGroup"}


def resolve_path(name, star_dir=None, data_root=None):
    """Find an image file referenced by a STAR/.cs file.

    Tried in order: absolute path, ``data_root``, the STAR file's folder and
    its parents (RELION paths are relative to the RELION project), the
    current directory.  Returns the first existing path or None.
    """
    if os.path.isabs(name):
        return name if os.path.exists(name) else None
    candidates = []
    if data_root:
        candidates.append(os.path.join(data_root, name))
    if star_dir:
        d = os.path.abspath(star_dir)
        for _ in range(4):
            candidates.append(os.path.join(d, name))
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    candidates.append(os.path.abspath(name))
    for c in candidates:
        if os.path.exists(c):
            return c
    return None


@dataclass
class ParticleTable:
    image_file: np.ndarray            # (N,) str, as referenced (relative or absolute)
    image_index: np.ndarray           # (N,) int, 0-based index in the stack
    apix: np.ndarray                  # (N,) float, A/pixel
    box: np.ndarray                   # (N,) int, pixels
    euler: np.ndarray = None          # (N, 3) degrees (rot, tilt, psi) or None
    origin_A: np.ndarray = None       # (N, 2) RELION origin in A or None
    ctf: CTFParams = None
    optics_group: np.ndarray = None   # (N,) int
    optics: StarBlock = None          # RELION 3.1 optics block (None for 3.0-style tables)
    extra: dict = field(default_factory=dict)  # other particle columns, written back verbatim
    base_dir: str = None              # folder the image paths are relative to
    name: str = "particles"

    def __len__(self):
        return len(self.image_index)

    # -- derived quantities -------------------------------------------------
    @property
    def has_pose(self):
        return self.euler is not None

    @property
    def has_ctf(self):
        return self.ctf is not None

    def uniform(self):
        """(box, apix) shared by all particles; raises if optics groups disagree."""
        boxes, sizes = np.unique(self.box), np.unique(np.round(self.apix, 6))
        if len(boxes) != 1 or len(sizes) != 1:
            raise StarError("particles mix box sizes %s and pixel sizes %s; process each optics group "
                            "separately or rescale them first" % (boxes.tolist(), sizes.tolist()))
        return int(boxes[0]), float(self.apix[0])

    def rotations(self, index=slice(None)):
        return euler_to_matrix(self.euler[index])

    def shifts_px(self, index=slice(None)):
        """Displacement of image content in pixels (see :mod:`geometry`)."""
        return origin_to_shift(self.origin_A[index] / self.apix[index, None])

    def subset(self, index):
        index = np.asarray(index)
        pick = lambda a: None if a is None else np.asarray(a)[index]  # noqa: E731
        return ParticleTable(pick(self.image_file), pick(self.image_index), pick(self.apix), pick(self.box),
                             pick(self.euler), pick(self.origin_A), None if self.ctf is None else self.ctf.subset(index),
                             pick(self.optics_group), self.optics, {k: np.asarray(v)[index] for k, v in self.extra.items()},
                             self.base_dir, self.name)

    def resolved_files(self, data_root=None):
        """Absolute path of each distinct stack; raises naming the first missing file."""
        out = {}
        for name in np.unique(self.image_file):
            path = resolve_path(str(name), self.base_dir, data_root)
            if path is None:
                raise FileNotFoundError("particle stack not found: %s (searched from %s)"
                                        % (name, self.base_dir or os.getcwd()))
            out[str(name)] = path
        return out

    def set_amplitudes(self, amplitudes, mode_numbers):
        """Normal-mode amplitudes (N, M) as the :data:`AMPLITUDE_COLUMN` columns of ``mode_numbers``."""
        for k, number in enumerate(mode_numbers):
            self.extra[AMPLITUDE_COLUMN % int(number)] = np.asarray(amplitudes)[:, k]

    def with_results(self, euler, origin_A, amplitudes=None, mode_numbers=None, data_root=None):
        """A copy with new poses (and amplitudes), its image paths made absolute, to write elsewhere."""
        out = self.subset(np.arange(len(self)))
        resolved = self.resolved_files(data_root)
        out.image_file = np.array([resolved[str(f)] for f in self.image_file])
        out.euler, out.origin_A = euler, origin_A
        if amplitudes is not None:
            out.set_amplitudes(amplitudes, mode_numbers)
        return out

    # -- STAR output ----------------------------------------------------------
    def to_star(self, path, relative_to=None):
        """Write a RELION 3.1 STAR file (optics + particles blocks)."""
        n = len(self)
        groups = self.optics_group if self.optics_group is not None else np.ones(n, dtype=np.int64)
        optics = self._optics_block(groups)
        files = np.asarray(self.image_file).astype(str)
        if relative_to is not None:
            files = np.array([os.path.relpath(f, relative_to) if os.path.isabs(f) else f for f in files])
        names = np.char.add(np.char.add(np.char.zfill((self.image_index + 1).astype(str), 6), "@"), files)
        part = StarBlock("particles")
        part.set("rlnImageName", names)
        part.set("rlnOpticsGroup", groups.astype(np.int64))
        if self.euler is not None:
            for j, c in enumerate(_POSE):
                part.set(c, self.euler[:, j])
            origin = self.origin_A if self.origin_A is not None else np.zeros((n, 2))
            for j, c in enumerate(_ORIGIN_A):
                part.set(c, origin[:, j])
        if self.ctf is not None:
            for col, attr in _CTF_COLUMNS.items():
                if col in _OPTICS_CTF:
                    continue
                part.set(col, np.broadcast_to(np.asarray(getattr(self.ctf, attr), dtype=np.float64), (n,)))
        for c, v in self.extra.items():
            if c not in part:
                part.set(c, v)
        write_star(path, [optics, part])

    def optics_table(self):
        """The RELION 3.1 optics block of this table: one row per optics group with its pixel size, box and,
        with a CTF, voltage, Cs and amplitude contrast (taken from the group's first particle); the other
        columns of a block read from a STAR file are kept."""
        n = len(self)
        return self._optics_block(self.optics_group if self.optics_group is not None else np.ones(n, dtype=np.int64))

    def _optics_block(self, groups):
        if self.optics is not None and "rlnOpticsGroup" in self.optics:
            block = StarBlock("optics", self.optics.columns, dict(self.optics.values))
        else:
            block = StarBlock("optics")
            uniq = np.unique(groups)
            block.set("rlnOpticsGroup", uniq)
            block.set("rlnOpticsGroupName", np.array(["opticsGroup%d" % g for g in uniq]))
        order = block.ints("rlnOpticsGroup")
        first = np.array([np.nonzero(groups == g)[0][0] if np.any(groups == g) else 0 for g in order])
        block.set("rlnImagePixelSize", self.apix[first].astype(np.float64))
        block.set("rlnImageSize", self.box[first].astype(np.int64))
        block.set("rlnImageDimensionality", np.full(len(order), 2, dtype=np.int64))
        if self.ctf is not None:
            for col in _OPTICS_CTF:
                v = np.broadcast_to(np.asarray(getattr(self.ctf, _CTF_COLUMNS[col]), dtype=np.float64), (len(self),))
                block.set(col, v[first])
        return block


# -- readers ------------------------------------------------------------------

def _split_image_names(names):
    """``000012@path`` -> (file, 0-based index); a bare path means a single image."""
    names = np.asarray(names).astype(str)
    has_at = np.char.find(names, "@") >= 0
    parts = np.char.partition(names, "@")
    index = np.where(has_at, parts[:, 0], "1")
    files = np.where(has_at, parts[:, 2], names)
    try:
        return files, index.astype(np.int64) - 1
    except ValueError:
        raise StarError("rlnImageName must look like 000001@stack.mrcs") from None


def _star_particles(path, apix=None, amplitude_contrast=None):
    blocks = read_star(path)
    optics = blocks.get("optics")
    part = blocks.get("particles")
    if part is None:  # RELION 3.0: a single unnamed (or other) loop block
        loops = [b for b in blocks.values() if b.loop and "rlnImageName" in b]
        if not loops:
            raise StarError("%s: no particle block with rlnImageName" % path)
        part = loops[0]
    if "rlnImageName" not in part:
        raise StarError("%s: particle block has no rlnImageName column" % path)
    n = len(part)
    if n == 0:
        raise StarError("%s: the particle block holds no particles" % path)
    files, index = _split_image_names(part.strings("rlnImageName"))
    groups = part.ints("rlnOpticsGroup") if "rlnOpticsGroup" in part else np.ones(n, dtype=np.int64)

    def per_particle(column, default=None):
        """Column from the particle block, else from the matching optics group."""
        if column in part:
            return part.floats(column)
        if optics is not None and column in optics and "rlnOpticsGroup" in optics:
            lookup = dict(zip(optics.ints("rlnOpticsGroup"), optics.floats(column)))
            try:
                return np.array([lookup[g] for g in groups], dtype=np.float64)
            except KeyError as exc:
                raise StarError("%s: particle refers to optics group %s, absent from data_optics" % (path, exc))
        return None if default is None else np.full(n, default, dtype=np.float64)

    pixel = per_particle("rlnImagePixelSize")
    if pixel is None and "rlnDetectorPixelSize" in part and "rlnMagnification" in part:
        pixel = part.floats("rlnDetectorPixelSize") * 1e4 / part.floats("rlnMagnification")
    if pixel is None:
        if apix is None:
            raise StarError("%s: no pixel size (rlnImagePixelSize, or rlnDetectorPixelSize and "
                            "rlnMagnification); give it explicitly" % path)
        pixel = np.full(n, float(apix))
    elif apix is not None:
        pixel = np.full(n, float(apix))
    box = per_particle("rlnImageSize")
    box = None if box is None else np.rint(box).astype(np.int64)

    euler = None
    if all(c in part for c in _POSE):
        euler = np.stack([part.floats(c) for c in _POSE], -1)
    origin = None
    if all(c in part for c in _ORIGIN_A):
        origin = np.stack([part.floats(c) for c in _ORIGIN_A], -1)
    elif all(c in part for c in _ORIGIN_PX):
        origin = np.stack([part.floats(c) for c in _ORIGIN_PX], -1) * pixel[:, None]
    if euler is not None and origin is None:
        origin = np.zeros((n, 2))

    ctf = None
    if "rlnDefocusU" in part:
        values = {}
        defaults = {"rlnDefocusV": None, "rlnDefocusAngle": 0.0, "rlnVoltage": None,
                    "rlnSphericalAberration": None, "rlnAmplitudeContrast": amplitude_contrast,
                    "rlnPhaseShift": 0.0, "rlnCtfBfactor": 0.0, "rlnCtfScalefactor": 1.0}
        for col, attr in _CTF_COLUMNS.items():
            v = per_particle(col, defaults.get(col))
            if v is None and col == "rlnDefocusV":
                v = part.floats("rlnDefocusU")
            if v is None and col == "rlnAmplitudeContrast":
                raise StarError("%s: no amplitude contrast (rlnAmplitudeContrast; RELION 3.0 files may lack "
                                "it): give it explicitly (--amplitude-contrast, e.g. 0.1)" % path)
            if v is None:
                raise StarError("%s: CTF column %s missing" % (path, col))
            values[attr] = v
        ctf = CTFParams(**values)
    extra = {c: part.values[c] for c in part.columns if c not in _HANDLED}
    table = ParticleTable(files, index, pixel, box, euler, origin, ctf, groups,
                          optics if optics is not None and "rlnOpticsGroup" in optics else None,
                          extra, os.path.dirname(os.path.abspath(path)),
                          os.path.splitext(os.path.basename(path))[0])
    return table


def _cs_particles(path, apix=None):
    data = np.load(path)
    names = data.dtype.names
    n = len(data)
    files = np.char.decode(data["blob/path"].astype(bytes)) if data["blob/path"].dtype.kind == "S" \
        else data["blob/path"].astype(str)
    files = np.char.lstrip(files, ">")  # cryoSPARC marks project-relative paths with '>'
    index = data["blob/idx"].astype(np.int64)  # already 0-based
    pixel = np.full(n, float(apix)) if apix is not None else data["blob/psize_A"].astype(np.float64)
    box = data["blob/shape"][:, 0].astype(np.int64)
    ctf = None
    if "ctf/df1_A" in names:
        ctf = CTFParams(defocus_u=data["ctf/df1_A"].astype(np.float64), defocus_v=data["ctf/df2_A"].astype(np.float64),
                        defocus_angle=np.rad2deg(data["ctf/df_angle_rad"].astype(np.float64)),
                        voltage=data["ctf/accel_kv"].astype(np.float64), cs=data["ctf/cs_mm"].astype(np.float64),
                        amplitude_contrast=data["ctf/amp_contrast"].astype(np.float64),
                        phase_shift=np.rad2deg(data["ctf/phase_shift_rad"].astype(np.float64))
                        if "ctf/phase_shift_rad" in names else 0.0,
                        bfactor=data["ctf/bfactor"].astype(np.float64) if "ctf/bfactor" in names else 0.0)
    euler = origin = None
    if "alignments3D/pose" in names:
        from .cryosparc import cs_pose_to_relion
        euler, origin = cs_pose_to_relion(data["alignments3D/pose"], data["alignments3D/shift"], pixel)
    return ParticleTable(files, index, pixel, box, euler, origin, ctf, np.ones(n, dtype=np.int64), None, {},
                         os.path.dirname(os.path.abspath(path)), os.path.splitext(os.path.basename(path))[0])


def read_particles(path, apix=None, check_files=False, data_root=None, amplitude_contrast=None):
    """Read a RELION STAR or cryoSPARC .cs particle file into a :class:`ParticleTable`.

    ``apix`` overrides (or supplies) the pixel size; ``amplitude_contrast`` supplies the amplitude contrast
    of a STAR file that has none (the file's own values win).  Missing box sizes are
    read from the stacks' headers.  With ``check_files`` every referenced
    stack must exist and agree with the table (:func:`check_stacks`), so that a command fails before its work.
    """
    if path.endswith(".cs"):
        table = _cs_particles(path, apix)
    else:
        table = _star_particles(path, apix, amplitude_contrast)
    if table.box is None or check_files:
        from .mrc import map_info
        files = table.resolved_files(data_root)
        if table.box is None:
            sizes = {name: map_info(p).shape[-1] for name, p in files.items()}
            table.box = np.array([sizes[str(f)] for f in table.image_file], dtype=np.int64)
        if check_files:
            check_stacks(table, files)
    return table


def check_stacks(table, files):
    """Every stack a table names is a readable real-valued MRC of square images of the declared box, holding
    every image index asked for (only headers are read).  Raises :class:`MRCError` naming the file."""
    from .mrc import MRCError, open_stack
    names, code = np.unique(np.asarray(table.image_file).astype(str), return_inverse=True)
    last = np.full(len(names), -1, dtype=np.int64)
    np.maximum.at(last, code, np.asarray(table.image_index, dtype=np.int64))
    boxes = np.zeros(len(names), dtype=np.int64)
    boxes[code] = table.box
    for i, name in enumerate(names):
        path = files[str(name)]
        handle, info = open_stack(path)
        handle.close()
        n, ny, nx = info.shape[-3:] if len(info.shape) >= 3 else (1,) + tuple(info.shape)
        if nx != ny:
            raise MRCError("%s: images are %dx%d; square images are required" % (path, nx, ny))
        if nx != boxes[i]:
            raise MRCError("%s: images are %d px but the particle file declares %d px" % (path, nx, boxes[i]))
        if last[i] >= n:
            raise MRCError("%s: image %d is asked for but the stack holds %d" % (path, last[i] + 1, n))
