"""Learning-rate schedule and the number of epochs of a run, fitted to a time limit.

:func:`lr_at`: a linear warmup to the peak rate (large early steps on a randomly initialised deep
network diverge), then a cosine decay to a small fraction of it at the last step, which ends a run
at a small step size without a patience rule.

:class:`EpochPlan`: without a time limit a run trains its ``epochs``.  With one, from the second
epoch on (the first carries start-up costs: compilation, cuDNN autotuning, the cache being filled),
the number of epochs is set to what fits in the time left at the mean epoch time, and only ever
lowered, so that the cosine schedule (whose length is the planned number of epochs) completes
within the limit instead of being cut off at a large learning rate.  The plan lives in the run's
state dictionary (keys ``epoch``, ``planned_epochs``, ``elapsed``, ``epoch_seconds``), which the
trainer saves in its checkpoint: a resumed run keeps the same plan.
"""
import math
import time

import numpy as np

from ..runtime import log

__all__ = ["lr_at", "EpochPlan"]


def lr_at(step, total_steps, warmup_steps, lr, final_lr_fraction=0.01):
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``final_lr_fraction * lr``
    at ``total_steps``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    low = final_lr_fraction
    return lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * t)))


class EpochPlan:
    """The epochs of a run: ``epochs``, or fewer to end within ``time_limit`` seconds (see the module
    docstring).  ``state``: the run's state dictionary (a resumed one continues its plan and clock);
    ``clock``: seconds (``time.time``; tests give a fake one).

    Use::

        plan = EpochPlan(config.epochs, config.time_limit, state)
        while plan.unfinished():
            plan.begin_epoch()
            ...                                   # train epoch plan.epoch (0-based), lr over plan.total
            last = plan.end_epoch(lead=rank == 0, sync=broadcast)
    """

    def __init__(self, epochs, time_limit=None, state=None, clock=time.time):
        self.epochs, self.time_limit, self.clock = int(epochs), time_limit, clock
        self.state = {} if state is None else state
        self.state.setdefault("epoch", 0)
        self.state.setdefault("planned_epochs", None if time_limit else self.epochs)
        self.state.setdefault("elapsed", 0.0)
        self._start = clock() - self.state["elapsed"]
        self._epoch_start = None
        self.epoch_seconds = None

    @property
    def epoch(self):
        """Epochs done."""
        return self.state["epoch"]

    @property
    def total(self):
        """The epochs planned (``epochs`` until a time limit has planned fewer)."""
        return self.state["planned_epochs"] or self.epochs

    def unfinished(self):
        return self.epoch < self.total

    def begin_epoch(self):
        self._epoch_start = self.clock()

    def proposal(self):
        """``[planned epochs or 0, stop]`` after the epoch just counted, as floats (what the lead
        process of a distributed run broadcasts).  ``stop``: the next epoch would end past the limit."""
        plan, stop = self.state["planned_epochs"] or 0, 0.0
        if not self.time_limit:
            return [float(plan), stop]
        state, limit = self.state, self.time_limit
        if state["epoch"] > 1:  # the first epoch carries start-up costs
            state.setdefault("epoch_seconds", []).append(self.epoch_seconds)
        if state["epoch"] >= min(2, self.epochs):
            # (re)plan from the mean epoch time, only ever fewer epochs: the schedule ends in time
            left = limit - state["elapsed"]
            mean = float(np.mean(state.get("epoch_seconds") or [self.epoch_seconds]))
            fit = min(self.epochs, state["epoch"] + max(0, int(0.97 * left / mean)))
            if state["planned_epochs"] is None:
                log("time limit %.0f s: %d epochs of %.2f s planned" % (limit, fit, mean))
            plan = fit if state["planned_epochs"] is None else min(state["planned_epochs"], fit)
        if state["elapsed"] + self.epoch_seconds > limit:
            stop = 1.0
        return [float(plan), stop]

    def end_epoch(self, lead=True, sync=None):
        """Count and time the epoch, re-plan (on the ``lead`` process; ``sync`` gives every process the
        lead's :meth:`proposal`, e.g. :func:`.ddp.broadcast_floats`); returns True when this was the last
        epoch (then ``planned_epochs`` is the epochs done)."""
        state = self.state
        state["epoch"] += 1
        now = self.clock()
        state["elapsed"] = now - self._start
        self.epoch_seconds = now - self._epoch_start
        proposal = self.proposal() if lead else [float(state["planned_epochs"] or 0), 0.0]
        plan, stop = sync(proposal) if sync is not None else proposal
        if int(plan):
            state["planned_epochs"] = int(plan)
        last = stop > 0 or state["epoch"] >= self.total
        if last:
            state["planned_epochs"] = state["epoch"]
        return last
