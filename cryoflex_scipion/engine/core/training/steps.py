"""The optimisation step: bfloat16 autocast, Adam ready for CUDA graphs, and a step replayed as one.

- :func:`autocast`: bfloat16 autocast on CUDA (the losses are then computed in float32 by the
  caller), or nothing.  Inside CUDA graph capture its weight cache must be off (a cached cast
  would be captured once and then go stale as the weights change): that is detected.
- :func:`make_adam`: fused Adam on CUDA with ``capturable`` state and the learning rate held in a
  device tensor (a graph replays the kernels it captured: a Python float would be baked in), plain
  Adam elsewhere.  :func:`set_lr` writes a new rate into either; :func:`load_optimizer_state`
  restores a checkpoint without replacing those device tensors.
- :class:`GraphStep`: ``loss_fn(*inputs) -> {name: loss}``, the sum backpropagated and every
  optimiser stepped.  With ``graph`` (CUDA, one process: DistributedDataParallel's hooks do not
  capture) the step is captured once as a CUDA graph after a few eager steps (on a side stream,
  as capture requires) and then replayed: a ResNet step is a thousand small kernels, which Python
  launches slower than an H200 runs them at a batch of a few hundred.  Inputs (tensors, or dicts /
  lists / tuples of them) are copied into static buffers; an input of another shape (a last,
  smaller batch) runs eagerly.  A capture that fails (an operation that cannot be captured) logs
  one line and the run continues eagerly.
"""
import contextlib

import torch

from ..runtime import log

__all__ = ["autocast", "make_adam", "set_lr", "load_optimizer_state", "GraphStep"]


def autocast(enabled, cache=None):
    """bfloat16 autocast on CUDA when ``enabled``, else nothing.  ``cache``: autocast's weight cache
    (default: on, except while a CUDA graph is being captured)."""
    if not enabled:
        return contextlib.nullcontext()
    if cache is None:
        cache = not torch.cuda.is_current_stream_capturing()
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)


def make_adam(params, lr, weight_decay=0.0, device="cpu"):
    """Adam over ``params`` (parameters, or parameter groups: dicts, whose optional ``lr_scale`` scales
    :func:`set_lr`'s rate for that group).  Weight decay as L2.  On CUDA: fused, capturable, the
    learning rate a device tensor (see the module docstring)."""
    if torch.device(device).type == "cuda":
        params = list(params)
        if params and isinstance(params[0], dict):  # every group's rate a device tensor too
            params = [{**g, "lr": torch.tensor(float(g.get("lr", lr)), device=device)} for g in params]
        return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), weight_decay=weight_decay,
                                fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def set_lr(opt, lr):
    """Set the learning rate of every group of ``opt`` (times its ``lr_scale``, when it has one)."""
    for group in opt.param_groups:
        value = lr * group["lr_scale"] if "lr_scale" in group else lr
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def load_optimizer_state(opt, state):
    """``opt.load_state_dict(state)``, keeping the groups' learning-rate tensors (a captured graph
    reads those very tensors)."""
    lr_tensors = [g["lr"] for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, lr in zip(opt.param_groups, lr_tensors):
        if isinstance(lr, torch.Tensor):
            group["lr"] = lr


def _tensors(tree):
    """The tensors of a nest of dicts, lists and tuples, in a fixed order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for k in sorted(tree) for t in _tensors(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


def _clone(tree):
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple (e.g. the cache's Poses)
        return type(tree)(*(_clone(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(v) for v in tree)
    return tree


class GraphStep:
    """One optimisation step: ``losses = loss_fn(*inputs)`` (a dict of scalar tensors), the sum of the
    losses backpropagated, each of ``optimizers`` stepped; returns the losses (detached device
    tensors; when replayed, static tensors valid until the next call).  See the module docstring
    for ``graph``; ``warmup_steps``: eager steps before the capture (they also let cuDNN choose its
    kernels and the optimisers create their state)."""

    def __init__(self, loss_fn, optimizers, graph=False, warmup_steps=3):
        self.loss_fn = loss_fn
        self.optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        self.graph, self.warmup_steps = graph, warmup_steps
        self._eager_steps, self._graph, self._static = 0, None, None

    def _forward_backward(self, inputs):
        losses = self.loss_fn(*inputs)
        sum(losses.values()).backward()
        for opt in self.optimizers:
            opt.step()
        return {k: v.detach() for k, v in losses.items()}

    def _eager(self, inputs):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return self._forward_backward(inputs)

    def __call__(self, *inputs):
        if not self.graph:
            return self._eager(inputs)
        if self._graph is None and self._eager_steps < self.warmup_steps:
            self._eager_steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                losses = self._eager(inputs)
            torch.cuda.current_stream().wait_stream(side)
            return losses
        if self._graph is None:
            try:
                self._capture(inputs)
            except Exception as exc:  # an operation that cannot be captured: keep training eagerly
                log("CUDA graph capture failed (%s); training without it" % str(exc).splitlines()[0])
                self.graph, self._graph = False, None
                return self._eager(inputs)
        static_inputs, losses = self._static
        given = _tensors(inputs)
        if [t.shape for t in given] != [t.shape for t in _tensors(static_inputs)]:
            return self._eager(inputs)  # another batch shape than the one captured
        for buffer, value in zip(_tensors(static_inputs), given):
            buffer.copy_(value)
        self._graph.replay()
        return losses

    def _capture(self, inputs):
        static_inputs = _clone(inputs)
        for opt in self.optimizers:  # gradients are then allocated inside the graph's memory pool
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            losses = self._forward_backward(static_inputs)
        self._graph, self._static = graph, (static_inputs, losses)
