"""Training DEFMap: sub-voxels of several (map, atoms) pairs, rotation augmentation, early stopping.

- Samples are the labelled voxels of every pair (:func:`labels.voxel_labels`); their sub-voxels
  are gathered from the prepared maps on the device batch by batch, never stored.
- Augmentation: each sample of each epoch is turned by one of the ten orientations of
  :data:`subvoxels.ROTATIONS` (identity, 90/180/270 degrees about x, y, z) drawn at random;
  the original stored all ten copies, which is the same distribution of samples.
- Labels are standardised with the training mean and standard deviation (stored in the
  model file); loss = MSE, Adam, learning rate 5e-5, batch 128 (the paper's settings).
- Validation: a random fraction of the voxels, never augmented; the best epoch's weights
  (lowest validation loss) are kept; training stops after ``patience`` epochs without
  improvement, after ``epochs``, or when ``time_limit`` seconds have passed.
- A checkpoint is written after every epoch; an existing one is resumed.
"""
import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..core.fingerprint import Fingerprint
from ..core.runtime import log
from ..core.training.checkpoint import load_checkpoint, save_checkpoint
from .labels import voxel_labels
from .network import DefmapNet
from .preprocess import prepare_map
from .subvoxels import BOX, ROTATIONS, SubvoxelSource, rotate_subvoxels

__all__ = ["TrainingItem", "TrainingSet", "TrainConfig", "make_item", "train", "evaluate", "pearson",
           "training_fingerprint"]


@dataclass
class TrainingItem:
    name: str
    source: SubvoxelSource   # boxes of BOX + 1 for exact rotations
    centres: np.ndarray      # (N, 3) z, y, x on the 1.5 A grid
    labels: np.ndarray       # (N,) log10 RMSF


def make_item(name, volume, apix, origin, coords, rmsf, resolution, device="cpu", max_distance=None):
    """A :class:`TrainingItem` from a map (any shape) and per-atom RMSF (A) of atoms in its frame."""
    prepared = prepare_map(volume, apix, origin, resolution, device=device)
    centres, labels, _ = voxel_labels(prepared.grid, coords, rmsf, max_distance)
    if len(centres) == 0:
        raise ValueError("%s: no labelled voxel (is the model inside the map?)" % name)
    return TrainingItem(name, SubvoxelSource(prepared.values, box=BOX + 1), centres, labels)


def pearson(a, b):
    """Pearson correlation over the entries where both are finite (NaN with fewer than 3)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


class TrainingSet:
    """All labelled voxels of several items, split into training and validation voxels."""

    def __init__(self, items, val_fraction=0.1, seed=0):
        self.items = list(items)
        self.item_of = np.concatenate([np.full(len(it.labels), i) for i, it in enumerate(self.items)])
        self.row_of = np.concatenate([np.arange(len(it.labels)) for it in self.items])
        labels = np.concatenate([it.labels for it in self.items]).astype(np.float64)
        order = np.random.default_rng(seed).permutation(len(labels))
        n_val = int(round(val_fraction * len(labels))) if len(labels) >= 20 else 0
        self.val, self.train = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.label_mean = float(labels[self.train].mean())
        self.label_std = float(labels[self.train].std()) or 1.0
        self.labels = labels

    def names(self):
        return [it.name for it in self.items]

    def batch(self, samples, rotations=None, device="cpu"):
        """``(subvoxels (N, 10, 10, 10), standardised labels (N,))`` of sample indices, turned by
        ``rotations`` (indices into :data:`ROTATIONS`; None: unturned)."""
        samples = np.asarray(samples)
        larger = torch.empty(len(samples), BOX + 1, BOX + 1, BOX + 1, device=device)
        for i in np.unique(self.item_of[samples]):
            sel = np.nonzero(self.item_of[samples] == i)[0]
            item = self.items[i]
            larger[torch.as_tensor(sel, device=device)] = item.source.extract(
                item.centres[self.row_of[samples[sel]]]).to(device)
        if rotations is None:
            x = larger[:, :BOX, :BOX, :BOX]
        else:
            x = rotate_subvoxels(larger, rotations)
        y = (self.labels[samples] - self.label_mean) / self.label_std
        return x.contiguous(), torch.as_tensor(y, dtype=torch.float32, device=device)


@dataclass
class TrainConfig:
    epochs: int = 100
    patience: int = 10             # epochs without a better validation loss before stopping
    batch_size: int = 128
    lr: float = 5e-5
    time_limit: float = None       # seconds for the whole training (None: no limit)
    samples_per_epoch: int = None  # None: every training voxel once per epoch
    augment: bool = True
    seed: int = 0
    amp: bool = False              # bfloat16 autocast on CUDA (faster; labels are standardised)


# Settings that only decide when training stops, not what each epoch does (Adam at a constant rate): a rerun
# that changes them resumes, e.g. to train longer.
_STOPPING = ("epochs", "patience", "time_limit")


def training_fingerprint(tset, config):
    """What a checkpoint must share with a run to be resumed: the maps, labelled voxels and their split,
    and every setting but those of :data:`_STOPPING`."""
    return Fingerprint(inputs={"names": tset.names(), "maps": [it.source.digest() for it in tset.items],
                               "centres": [it.centres for it in tset.items], "labels": tset.labels,
                               "train": tset.train, "val": tset.val},
                       training={k: v for k, v in asdict(config).items() if k not in _STOPPING})


def bf16_autocast(enabled):
    """bfloat16 autocast on CUDA, or nothing (no CUDA autocast object on CPU-only builds)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def evaluate(net, tset, samples, device, batch_size=1024):
    """``(MSE in standardised units, Pearson r of log10 RMSF)`` on unturned samples."""
    if len(samples) == 0:
        return float("nan"), float("nan")
    net.eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            x, _ = tset.batch(samples[start:start + batch_size], device=device)
            preds.append(net(x).float().cpu().numpy())
    pred = np.concatenate(preds)
    truth = (tset.labels[samples] - tset.label_mean) / tset.label_std
    return float(np.mean((pred - truth) ** 2)), pearson(pred, truth)


def _save_curve(path, history):
    if not path:
        return
    with open(path + ".json", "w") as fh:
        json.dump(history, fh, indent=1)
    keys = ["epoch", "train_loss", "val_loss", "val_r", "seconds", "samples"]
    with open(path + ".csv", "w") as fh:
        fh.write(",".join(keys) + "\n")
        for h in history:
            fh.write(",".join("%.6g" % h[k] if isinstance(h[k], float) else str(h[k]) for k in keys) + "\n")


def train(tset, config, device="cpu", checkpoint=None, curve=None, net=None, on_mismatch="error"):
    """Train a :class:`DefmapNet` on ``tset``; returns ``(net with the best weights, history)``.

    ``checkpoint``: path written after every epoch and resumed from when it was written for the same
    :func:`training_fingerprint`; one written for other data or settings is refused (``on_mismatch='error'``)
    or moved aside (``'restart'``), see :func:`..core.training.checkpoint.load_checkpoint`.
    ``curve``: path prefix of the training curve (``.csv`` and ``.json``).
    """
    if net is None:
        torch.manual_seed(config.seed)  # reproducible initial weights
        net = DefmapNet()
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    state = {"epoch": 0, "best_loss": float("inf"), "best_state": None, "bad_epochs": 0, "history": [],
             "elapsed": 0.0}
    fingerprint = training_fingerprint(tset, config)
    saved = load_checkpoint(checkpoint, fingerprint, device, on_mismatch) if checkpoint else None
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log("resumed from %s after epoch %d" % (checkpoint, state["epoch"]))
    use_amp = bool(config.amp) and torch.device(device).type == "cuda"
    monitor = tset.val if len(tset.val) else tset.train[: min(len(tset.train), 4096)]
    start = time.time() - state["elapsed"]
    out_of_time = False
    for epoch in range(state["epoch"], config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 100003 + epoch)  # dropout masks, reproducible on resume
        order = rng.permutation(tset.train)[: config.samples_per_epoch or None]
        net.train()
        total, seen = torch.zeros((), device=device), 0
        for b in range(0, len(order), config.batch_size):
            samples = order[b:b + config.batch_size]
            rot = rng.integers(0, len(ROTATIONS), len(samples)) if config.augment else None
            x, y = tset.batch(samples, rot, device)
            with bf16_autocast(use_amp):
                out = net(x)
            loss = torch.mean((out.float() - y) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(samples)  # no host sync per step
            seen += len(samples)
            if config.time_limit and time.time() - start > config.time_limit:
                out_of_time = True
                break
        val_loss, val_r = evaluate(net, tset, monitor, device)
        state["history"].append({"epoch": epoch + 1, "train_loss": float(total) / max(seen, 1), "val_loss": val_loss,
                                 "val_r": val_r, "seconds": time.time() - start, "samples": seen})
        if val_loss < state["best_loss"]:
            state.update(best_loss=val_loss, bad_epochs=0, best_epoch=epoch + 1,
                         best_state={k: v.detach().clone() for k, v in net.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["epoch"], state["elapsed"] = epoch + 1, time.time() - start
        h = state["history"][-1]
        log("epoch %d: train loss %.4f, validation loss %.4f (r %.3f), %.0f s"
            % (h["epoch"], h["train_loss"], val_loss, val_r, h["seconds"]))
        if checkpoint:
            save_checkpoint(checkpoint, {"net": net, "optimizer": opt, "state": state, "config": asdict(config)},
                            fingerprint)
        _save_curve(curve, state["history"])
        if state["bad_epochs"] >= config.patience or out_of_time:
            break
    if state["best_state"] is not None:
        net.load_state_dict(state["best_state"])
    net.eval()
    net.best_epoch = state.get("best_epoch")
    return net, copy.deepcopy(state["history"])
