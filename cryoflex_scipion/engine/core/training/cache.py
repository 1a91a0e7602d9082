"""Particle images prepared for a network, with their poses and CTFs, batch by batch on the device.

Every image is Fourier-cropped to the working size (anti-aliased downscaling,
:func:`..fourier.fourier_resize`; never upscaled) and then normalised by a *normaliser* given by
the trainer, on the compute device:

- :class:`PerImageNormaliser`: zero mean and unit standard deviation per image (DeepHEMNMA: a
  regression network should not see the contrast of one micrograph as a feature);
- :class:`GlobalNormaliser`: one scale (and optionally one offset) for every image, estimated once
  from a sample of images (generative models such as 3DFlex or cryoSPHERE compare images with
  CTF-modulated projections of one map, so the relative intensities of the images must be kept).

A normaliser is called on float32 images ``(n, size, size)``; one whose ``fitted`` is False is
first given, by ``fit(batches)``, its ``sample_size`` images chosen with its ``seed`` (at the
working size); ``settings()`` (what it depends on, for a fingerprint) and ``to_dict()`` (to store
with a model) describe it.

Where the prepared images live (:meth:`ParticleCache.load`): a set that fits is prepared once and
kept on the GPU (float16: normalised images lose nothing that matters at cryo-EM SNRs, and 14,000
images of 128 px take 0.46 GB; float32 in host memory for a CPU run), else in pinned host memory
(float32), else nowhere: batches are then read from the stacks by :class:`..io.stack.ImageSource`
with the next batch read by a background thread while the device works on the current one, so a
million images stream through a bounded memory.

Per particle the cache also carries, as small tables on the device:

- the *index* of the particle in the table given to the cache (what per-particle latents of an
  auto-decoder are looked up by);
- the *pose* (when the table has angles): rotation matrices ``A`` and ZYZ Euler angles (degrees)
  of :mod:`..geometry`, the RELION origin in A, and the displacement of the image content in
  working pixels (:func:`..geometry.origin_to_shift` of the origin over the working pixel size,
  what :func:`..fourier.shift_images` applies to images at the working size);
- the *CTF* parameters (when the table has them): float64 tensors that :func:`..ctf.compute_ctf`
  takes in place of a :class:`..ctf.CTFParams` (:meth:`CTFBatch.images` computes the CTFs at the
  working size and pixel size).

A batch is a :class:`Batch` ``(indices, images, poses, ctf)``.
"""
import concurrent.futures
import os
from typing import NamedTuple

import numpy as np
import torch

from ..ctf import compute_ctf
from ..fingerprint import digest
from ..fourier import fourier_resize
from ..geometry import euler_to_matrix, origin_to_shift
from ..io.stack import ImageSource
from ..runtime import host_memory_available

__all__ = ["working_geometry", "PerImageNormaliser", "GlobalNormaliser", "normaliser_from_dict", "Poses",
           "CTFBatch", "Batch", "ParticleCache"]


def working_geometry(box, apix, size):
    """``(working size, working pixel size)``: at most ``size`` pixels, never more than ``box``."""
    work = min(int(size), int(box))
    return work, float(apix) * int(box) / work


class PerImageNormaliser:
    """Zero mean and unit standard deviation over each image's box (nothing to fit)."""

    fitted = True
    sample_size = seed = 0

    def __call__(self, x):
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        return (x - mean) / std

    def fit(self, batches):
        return self

    def settings(self):
        """What the normalisation depends on, before fitting (a fingerprint part)."""
        return {"kind": "per_image"}

    def to_dict(self):
        return self.settings()


class GlobalNormaliser:
    """``(x - offset) / scale`` with one offset and scale for every image: ``scale`` the standard
    deviation of the pixels of ``sample_size`` images (at the working size) chosen with ``seed``,
    ``offset`` their mean with ``subtract_mean``, else 0 (a projection's zero level is the solvent's,
    which a model should keep; the images' DC terms are then left to the CTF-modulated model).

    Fitted once by the first :class:`ParticleCache` it is given to; give the same (fitted) object,
    or one rebuilt with :func:`normaliser_from_dict`, to the caches of other sets (prediction) so
    that every set is scaled alike.
    """

    def __init__(self, sample_size=1000, seed=0, subtract_mean=False, offset=None, scale=None):
        self.sample_size, self.seed, self.subtract_mean = int(sample_size), int(seed), bool(subtract_mean)
        self.offset, self.scale = offset, scale

    @property
    def fitted(self):
        return self.scale is not None

    def fit(self, batches):
        """Fit from an iterable of float tensors ``(n, D, D)`` (sums in float64, batch by batch)."""
        total, total_sq, count = 0.0, 0.0, 0
        for x in batches:
            x = x.double()
            total += float(x.sum())
            total_sq += float((x * x).sum())
            count += x.numel()
        if count == 0:
            raise ValueError("no images to fit the normalisation on")
        mean = total / count
        std = max((total_sq / count - mean * mean), 0.0) ** 0.5
        self.offset = mean if self.subtract_mean else 0.0
        self.scale = std if std > 0 else 1.0
        return self

    def __call__(self, x):
        if not self.fitted:
            raise RuntimeError("GlobalNormaliser used before it was fitted")
        return (x - self.offset) / self.scale

    def settings(self):
        return {"kind": "global", "sample_size": self.sample_size, "seed": self.seed,
                "subtract_mean": self.subtract_mean}

    def to_dict(self):
        return {**self.settings(), "offset": self.offset, "scale": self.scale}


def normaliser_from_dict(d):
    """A normaliser from its :meth:`to_dict` (e.g. stored in a model file)."""
    if d["kind"] == "per_image":
        return PerImageNormaliser()
    if d["kind"] == "global":
        return GlobalNormaliser(d["sample_size"], d["seed"], d["subtract_mean"], d.get("offset"), d.get("scale"))
    raise ValueError("unknown image normalisation %r" % d["kind"])


class Poses(NamedTuple):
    """Poses of a batch (float32 device tensors): ``rotations (n, 3, 3)`` (matrices ``A``),
    ``euler (n, 3)`` ZYZ degrees, ``origin_A (n, 2)`` RELION origin, ``shifts_px (n, 2)`` displacement
    of the image content in working pixels."""
    rotations: torch.Tensor
    euler: torch.Tensor
    origin_A: torch.Tensor
    shifts_px: torch.Tensor


class CTFBatch:
    """CTF parameters of a batch: ``(n,)`` float64 device tensors named as :class:`..ctf.CTFParams`'s
    fields, and the working geometry.  :func:`..ctf.compute_ctf` takes it as its ``params`` (with
    ``n`` given), so ``compute_ctf(ctf, ctf.size, ctf.apix, n=len(ctf))`` equals the CTFs of the
    table's :class:`..ctf.CTFParams` subset of these particles at the working size."""

    def __init__(self, params, size, apix):
        self.params, self.size, self.apix = params, int(size), float(apix)

    def __len__(self):
        return len(self.params["defocus_u"])

    def __getattr__(self, name):
        try:
            return self.__dict__["params"][name]
        except KeyError:
            raise AttributeError(name) from None

    def tensors(self, n=None, device=None, dtype=torch.float64):
        """The parameters as ``dtype`` tensors (the interface :func:`..ctf.compute_ctf` uses)."""
        return {k: v.to(device=device or v.device, dtype=dtype) for k, v in self.params.items()}

    def images(self, size=None, apix=None, dtype=torch.float32):
        """CTF images ``(n, size, size)`` (default: the working size and pixel size), centred layout."""
        device = self.params["defocus_u"].device
        return compute_ctf(self, size or self.size, apix or self.apix, n=len(self), device=device, dtype=dtype)


class Batch(NamedTuple):
    """One batch on the device: ``indices`` (int64, positions in the particle table), ``images``
    (float32 ``(n, size, size)``, prepared), ``poses`` (:class:`Poses` or None), ``ctf``
    (:class:`CTFBatch` or None)."""
    indices: torch.Tensor
    images: torch.Tensor
    poses: object
    ctf: object


class ParticleCache:
    """Prepared images of a particle table (or of an array), by position, with poses and CTFs.

    ``source``: a :class:`..io.particles.ParticleTable` (one box and pixel size; images read with
    :class:`..io.stack.ImageSource`; poses and CTF taken from it) or an array/tensor ``(N, D, D)``
    of raw images (tests, in-memory data: prepared at once, kept in host memory).
    ``size``: the working size, at most.  ``normaliser``: see the module docstring (default
    :class:`PerImageNormaliser`); one that is not fitted yet is fitted here on a sample.
    ``euler`` ``(N, 3)`` degrees, ``origin_A`` ``(N, 2)``, ``ctf`` (:class:`..ctf.CTFParams`) and
    ``apix``: for an array source, or to override the table's.
    """

    def __init__(self, source, size, data_root=None, normaliser=None, euler=None, origin_A=None, ctf=None,
                 apix=None):
        self.cache, self.reader, self.table = None, None, None
        self.normaliser = normaliser if normaliser is not None else PerImageNormaliser()
        self._raw_digest, self._fingerprint, self._tables = None, None, {}
        if isinstance(source, (np.ndarray, torch.Tensor)):
            raw = torch.as_tensor(np.asarray(source) if isinstance(source, np.ndarray) else source)
            self.n, self.box = raw.shape[0], raw.shape[-1]
            self.apix = None if apix is None else float(apix)
            self.size = min(int(size), self.box)
            self._raw_digest = digest(raw.detach().cpu().numpy())
            if not self.normaliser.fitted:
                self._fit_normaliser(lambda positions: raw[torch.as_tensor(positions)])
            self.cache = self._prepare(raw, raw.device)
        else:
            self.table = source
            self.reader = ImageSource(source, data_root)
            self.n, self.box = len(source), self.reader.size
            self.apix = float(apix) if apix is not None else (float(source.apix[0]) if len(source) else None)
            self.size = min(int(size), self.box) if self.box else int(size)
            euler = source.euler if euler is None else euler
            origin_A = source.origin_A if origin_A is None else origin_A
            ctf = source.ctf if ctf is None else ctf
            if not self.normaliser.fitted:
                self._fit_normaliser(lambda positions: torch.as_tensor(self.reader.read(positions)))
        self.euler = None if euler is None else np.asarray(euler, np.float64).reshape(self.n, 3)
        if origin_A is None and self.euler is not None:
            origin_A = np.zeros((self.n, 2))
        self.origin_A = None if origin_A is None else np.asarray(origin_A, np.float64).reshape(self.n, 2)
        self.ctf_params = ctf

    def __len__(self):
        return self.n

    @property
    def working_apix(self):
        """Pixel size of the prepared images (A/px; None when the source's is unknown)."""
        return None if self.apix is None else self.apix * self.box / self.size

    @property
    def cached_on(self):
        return None if self.cache is None else self.cache.device

    # -- preparation ------------------------------------------------------------------------
    def _fit_normaliser(self, read):
        """Fit the normaliser on its sample of the images (``read(positions)`` -> raw images), at the
        working size, 256 images at a time."""
        k = min(self.n, self.normaliser.sample_size)
        sample = np.sort(np.random.default_rng(self.normaliser.seed).choice(self.n, k, replace=False))
        self.normaliser.fit(self._resize(read(sample[s:s + 256])) for s in range(0, len(sample), 256))

    def _resize(self, raw):
        x = raw.float()
        return fourier_resize(x, self.size) if x.shape[-1] != self.size else x

    def _prepare(self, raw, device):
        return self.normaliser(self._resize(torch.as_tensor(raw).to(device, non_blocking=True)))

    # -- per-particle tables ----------------------------------------------------------------
    def _device_tables(self, device):
        """Poses and CTF parameters of every particle on ``device`` (made once per device)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # one copy for 'cuda' and 'cuda:0'
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if key not in self._tables:
            tables = {}
            if self.euler is not None:
                shifts = origin_to_shift(self.origin_A / self.working_apix) if self.apix is not None \
                    else np.full((self.n, 2), np.nan)
                tables["pose"] = Poses(*(torch.as_tensor(np.asarray(v), dtype=torch.float32, device=device)
                                         for v in (euler_to_matrix(self.euler), self.euler, self.origin_A, shifts)))
            if self.ctf_params is not None:
                tables["ctf"] = self.ctf_params.tensors(self.n, device=device, dtype=torch.float64)
            self._tables[key] = tables
        return self._tables[key]

    def poses(self, indices, device):
        """:class:`Poses` of the particles at ``indices`` (a tensor on ``device``), or None."""
        table = self._device_tables(device).get("pose")
        return None if table is None else Poses(*(t.index_select(0, indices) for t in table))

    def ctf(self, indices, device):
        """:class:`CTFBatch` of the particles at ``indices`` (a tensor on ``device``), or None."""
        table = self._device_tables(device).get("ctf")
        if table is None:
            return None
        return CTFBatch({k: v.index_select(0, indices) for k, v in table.items()}, self.size, self.working_apix)

    # -- images and batches -----------------------------------------------------------------
    def get(self, positions, device):
        """Prepared float32 images ``(n, size, size)`` at ``positions`` (numpy, or a tensor, which
        avoids a host-device copy per batch when it is on the cache's device) on ``device``."""
        if self.cache is not None:
            idx = torch.as_tensor(positions, device=self.cache.device)
            return self.cache.index_select(0, idx).to(device, torch.float32, non_blocking=True)
        if isinstance(positions, torch.Tensor):
            positions = positions.cpu().numpy()
        return self._prepare(self.reader.read(np.asarray(positions, dtype=np.int64)), device)

    def _batch(self, positions, images, device, tables):
        device = torch.device(device)
        indices = torch.as_tensor(positions, dtype=torch.int64, device=device)
        if not tables:
            return Batch(indices, images, None, None)
        return Batch(indices, images, self.poses(indices, device), self.ctf(indices, device))

    def batch(self, positions, device, tables=True):
        """The :class:`Batch` of the particles at ``positions``; ``tables=False``: without poses and
        CTF (a trainer that does not use them saves their gathers on every step)."""
        return self._batch(positions, self.get(positions, device), device, tables)

    def batches(self, positions, batch_size, device, tables=True):
        """Yield :class:`Batch` es of ``batch_size`` consecutive entries of ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        return self.batches_of([positions[s:s + batch_size] for s in range(0, len(positions), batch_size)], device,
                               tables)

    def batches_of(self, chunks, device, tables=True):
        """Yield the :class:`Batch` of each chunk of positions (numpy or tensors) in ``chunks``.  When the
        images are not cached, the next chunk is read from disk by a background thread while the caller
        works on the current one."""
        if self.cache is not None:
            for pos in chunks:
                yield self.batch(pos, device, tables)
            return
        # host positions for the reader, converted before the first read (one wait for the device)
        chunks = [c.cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c, dtype=np.int64) for c in chunks]
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.reader.read, chunks[0]) if chunks else None
            for i, pos in enumerate(chunks):
                raw = pending.result()
                pending = pool.submit(self.reader.read, chunks[i + 1]) if i + 1 < len(chunks) else None
                yield self._batch(pos, self._prepare(raw, device), device, tables)

    # -- where the prepared images are kept -------------------------------------------------
    def cache_bytes(self, dtype):
        return self.n * self.size * self.size * torch.empty((), dtype=dtype).element_size()

    def choose_cache(self, device, mode="auto", fraction=0.4):
        """Where to cache: ``'device'``, ``'host'`` or ``'none'`` (``mode='auto'``: the device when the
        set takes under ``fraction`` of its free memory, else host memory under the same rule
        (:func:`..runtime.host_memory_available`), else none)."""
        if mode != "auto":
            return mode
        device = torch.device(device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if self.cache_bytes(torch.float16) < fraction * free:
                return "device"
        if self.cache_bytes(torch.float32) < fraction * host_memory_available():
            return "host" if device.type == "cuda" else "device"
        return "none"

    def load(self, device, where="auto", batch_size=1024, progress=None, fraction=0.4):
        """Prepare every image once and keep them (see :meth:`choose_cache`); returns where they are."""
        where = self.choose_cache(device, where, fraction)
        if where == "none" or self.cache is not None:
            return where if self.cache is None else str(self.cache.device)
        device = torch.device(device)
        store = device if where == "device" else torch.device("cpu")
        dtype = torch.float16 if store.type == "cuda" else torch.float32
        # pinned from the start for a GPU run: pinning afterwards would hold the set twice
        cache = torch.empty(self.n, self.size, self.size, dtype=dtype, device=store,
                            pin_memory=store.type == "cpu" and device.type == "cuda")
        for batch in self.batches(np.arange(self.n), batch_size, device, tables=False):
            cache[batch.indices.to(store)] = batch.images.to(store, dtype)
            if progress is not None:
                progress.update(len(batch.indices))
        self.cache = cache
        return where

    # -- identity of the inputs -------------------------------------------------------------
    def fingerprint(self):
        """What the prepared data depend on, for :class:`.checkpoint.Fingerprint`: counts and geometry,
        the normaliser's settings, a digest of the images (the whole array for an array source; for a
        table the stack references and 16 images spread over it, read back: cheap for a million
        particles, and unchanged when a project folder is moved), of the poses and of the CTFs."""
        if self._fingerprint is None:
            if self._raw_digest is not None:
                images = self._raw_digest
            else:
                sample = np.unique(np.linspace(0, self.n - 1, min(self.n, 16)).round().astype(np.int64))
                # each particle's stack by its file name without the folders (which a moved project changes)
                names, stack_of = np.unique(np.asarray(self.table.image_file).astype(str), return_inverse=True)
                basenames, name_of = np.unique([os.path.basename(s) for s in names], return_inverse=True)
                images = [digest(self.reader.read(sample)), digest(np.asarray(self.table.image_index)),
                          basenames.tolist(), digest(name_of[stack_of.reshape(-1)].astype(np.int64))]
            self._fingerprint = {
                "n": self.n, "box": self.box, "apix": self.apix, "size": self.size,
                "normaliser": self.normaliser.settings(), "images": images,
                "poses": None if self.euler is None else [digest(self.euler), digest(self.origin_A)],
                "ctf": None if self.ctf_params is None else
                {k: digest(v.numpy()) for k, v in self.ctf_params.tensors(self.n, dtype=torch.float64).items()}}
        return self._fingerprint

    def close(self):
        if self.reader is not None:
            self.reader.close()
