"""Inference: amplitudes, orientations and shifts of particle images, streamed in batches.

The network's quaternion output is normalised and put in the canonical hemisphere in float64,
then turned into ZYZ Euler angles by :func:`..core.geometry.quaternion_to_euler` (so the angles
written and the quaternion saved are one rotation, to rounding); amplitudes and origins are the
outputs brought back from standardised units (:class:`.labels.LabelScaler`).  Any number of modes.
"""
import numpy as np
import torch

from ..core.geometry import canonical_quaternion, quaternion_to_euler
from ..core.runtime import run_batches
from ..core.training.steps import autocast

__all__ = ["autocast", "infer", "predict_images", "predict_particles", "to_pose"]


def _net_input(images, channels_last):
    x = images[:, None]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def infer(net, images, scaler, amp=False, channels_last=False):
    """Prepared images ``(N, D, D)`` -> decoded float32 outputs (``amplitudes``, ``quaternion``, ``origin_A``)."""
    with torch.inference_mode(), autocast(amp):
        out = net(_net_input(images, channels_last))
    return scaler.decode({k: v.float() for k, v in out.items()})


def to_pose(quaternion):
    """Raw predicted quaternions ``(N, 4)`` -> (unit canonical quaternion, ZYZ Euler degrees), float64 numpy."""
    q = np.asarray(quaternion, np.float64)
    q = canonical_quaternion(q / np.linalg.norm(q, axis=-1, keepdims=True))
    return q, quaternion_to_euler(q)


def predict_images(net, images, scaler, batch_size=1024, amp=False, channels_last=False):
    """Predictions for a tensor of prepared images already on the network's device (numpy results)."""
    parts = {}

    def work(start, stop):
        out = infer(net, images[start:stop], scaler, amp, channels_last)
        for k, v in out.items():
            parts.setdefault(k, []).append(v.cpu())

    run_batches(images.shape[0], batch_size, work, images.device, "DeepHEMNMA prediction")
    return _finish({k: torch.cat(v).double().numpy() for k, v in parts.items()}, images.shape[0])


def predict_particles(net, particles, scaler, device, batch_size=1024, amp=False, channels_last=False,
                      progress=None):
    """Predictions for every image of a :class:`.data.ParticleImages` (read and prepared batch by batch;
    the next batch is read from disk while the device computes)."""
    n = len(particles)
    parts = {}
    for batch in particles.batches(np.arange(n), batch_size, device, tables=False):
        images, out = batch.images, {}

        def work(start, stop):
            res = infer(net, images[start:stop], scaler, amp, channels_last)
            for k, v in res.items():
                out.setdefault(k, []).append(v.cpu())

        run_batches(len(images), len(images), work, torch.device(device), "DeepHEMNMA prediction")
        for k, v in out.items():
            parts.setdefault(k, []).append(torch.cat(v))
        if progress is not None:
            progress.update(len(images))
    return _finish({k: torch.cat(v).double().numpy() for k, v in parts.items()}, n)


def _finish(raw, n):
    """Numpy float64 results: ``amplitudes (N, M)``, ``quaternion (N, 4)``, ``euler (N, 3)``, ``origin_A (N, 2)``."""
    out = {"amplitudes": raw.get("amplitudes", np.zeros((n, 0))),
           "origin_A": raw.get("origin_A", np.zeros((n, 2)))}
    if "quaternion" in raw:
        out["quaternion"], out["euler"] = to_pose(raw["quaternion"])
    else:
        out["quaternion"], out["euler"] = np.tile([1.0, 0, 0, 0], (n, 1)), np.zeros((n, 3))
    return out
