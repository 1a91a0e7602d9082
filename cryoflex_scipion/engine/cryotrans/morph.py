"""Training of the CryoTRANS flow: multi-scale W2 stages, optional rigidity, optional L2 refinement.

A run is a list of :class:`Stage` s.  A W2 stage works on the grid binned by
``factor``: the particles are the voxels of the binned initial density, the
loss is the Sinkhorn W2 loss (:mod:`.sinkhorn`) between the splatted moved
particles and the binned target, plus ``rigidity`` times the tetrahedral
distortion (:mod:`.rigidity`).  The velocity network works in box units, so
one network carries over from coarse to fine grids: coarse stages find the
large motions cheaply (the cost of a Sinkhorn pass grows as m^4) and the
full-grid stage refines them.  An L2 stage (CryoTRANS "L2 refine") minimises
the relative squared difference to the target instead, for targets whose
resolution is close to the initial map's.

Checkpoints (network, optimiser, stage, iteration, loss history) are
written every ``checkpoint_every`` iterations and at the end of each stage;
a run started again with the same settings continues from the last one.
"""
import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core.fingerprint import Fingerprint
from ..core.maps import bin_map
from ..core.training.checkpoint import load_checkpoint, save_checkpoint
from .density import Level, particles_from_density, splat
from .flow import Flow, part_slices
from .rigidity import build_mesh
from .sinkhorn import SinkhornLoss, level_eps

__all__ = ["Stage", "MorphSettings", "Morph", "default_schedule", "parse_schedule", "trajectory"]


@dataclass
class Stage:
    kind: str          # "w2" or "l2"
    factor: int        # binning of the grid
    iterations: int
    lr: float


@dataclass
class MorphSettings:
    stages: list
    width: int = 100
    depth: int = 3
    steps: int = 10
    eps: float = 1e-4
    sinkhorn_iters: int = 5
    rigidity: float = 0.0
    part_weights: list = None
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50
    extra: dict = field(default_factory=dict)

    def fingerprint(self):
        """Settings that must match for a checkpoint to be resumed."""
        d = asdict(self)
        for k in ("checkpoint_every", "log_every"):
            d.pop(k)
        return json.dumps(d, sort_keys=True, default=str)

    # box_length is part of the problem, not of the settings: the command stores it in ``extra``.


def default_schedule(size, iterations=1000, lr=1e-3, min_coarse=24, coarse_share=0.3):
    """W2 stages: the grid binned 2x (if it keeps ``min_coarse`` voxels), then the full grid.

    ``coarse_share`` of the iterations go to the coarse grid, which finds the
    large motions at an eighth of the particles and a sixteenth of the
    Sinkhorn cost.  Deeper schedules (4x, 2x, 1x) were measured on a 160^3
    map on an H200: their coarsest stages are bound by kernel launches, not
    arithmetic, and reached the single-scale loss plateau later than two
    levels (benchmarks/RESULTS.md).
    """
    if -(-size // 2) < min_coarse or iterations < 2:
        return [Stage("w2", 1, iterations, lr)]
    coarse = max(1, int(round(iterations * coarse_share)))
    return [Stage("w2", 2, coarse, lr), Stage("w2", 1, iterations - coarse, lr)]


def parse_schedule(text, lr, l2_lr=1e-4):
    """``"4:400,2:300,1:200"`` -> W2 stages (binning factor : iterations); ``l2:1:300`` adds an L2 stage."""
    stages = []
    for item in text.split(","):
        fields = item.strip().split(":")
        kind = "w2"
        if fields[0].lower() in ("l2", "w2"):
            kind = fields.pop(0).lower()
        if len(fields) != 2:
            raise ValueError("schedule item %r: expected [l2:]factor:iterations" % item)
        factor, iterations = int(fields[0]), int(fields[1])
        if factor < 1 or iterations < 1:
            raise ValueError("schedule item %r: factor and iterations must be positive" % item)
        stages.append(Stage(kind, factor, iterations, l2_lr if kind == "l2" else lr))
    return stages


class _LevelData:
    """Particles, target and mesh of one grid level (moved to the device once)."""

    def __init__(self, morph, factor, rigidity):
        level = Level(morph.size, factor)
        pos, masses, index, labels = particles_from_density(morph.a0, level, morph.labels)
        extra_index = np.zeros((0, 3), dtype=np.int64)
        extra_labels = np.zeros(0, dtype=np.int64)
        self.mesh = None
        if rigidity > 0:
            extra_index, extra_labels, self.mesh = build_mesh(index.numpy(), level, labels,
                                                              morph.settings.part_weights)
        n_particles = len(pos)
        all_pos = torch.cat([pos, level.positions(torch.as_tensor(extra_index))])
        all_mass = torch.cat([masses, torch.zeros(len(extra_index), dtype=masses.dtype)])
        if labels is None:
            all_labels = torch.zeros(len(all_pos), dtype=torch.long)
        else:
            all_labels = torch.cat([labels, torch.as_tensor(extra_labels, dtype=torch.long)])
        order, self.parts = part_slices(all_labels)
        if len(self.parts) == 1 and self.parts[0][0] == 0:
            self.parts = None
        device, dtype = morph.device, morph.dtype
        self.positions = all_pos[order].to(device, dtype)
        self.masses = all_mass[order].to(device, dtype)
        if self.mesh is not None:
            rank = torch.empty_like(order)
            rank[order] = torch.arange(len(order))
            self.mesh.tets = rank[self.mesh.tets]
            self.mesh = self.mesh.to(device, dtype)
        self.level = level
        self.n_particles = n_particles
        self.n_points = len(all_pos)
        self.target = bin_map(torch.as_tensor(morph.a1), factor).to(device, dtype)
        self.eps = level_eps(morph.settings.eps, level.m)


class Morph:
    """Train a flow taking density ``a0`` to ``a1`` (full-grid arrays [z, y, x], same cubic shape).

    ``labels`` (optional, full grid, int >= 0) partitions ``a0``: each part
    gets its own velocity field.  ``box_length`` (A) expresses the W2 loss in
    A^2 per unit mass (box units^2 when 1), which makes the rigidity weight
    independent of the box size.
    """

    def __init__(self, a0, a1, settings, labels=None, device="cpu", dtype=torch.float32, box_length=1.0):
        self.a0 = np.asarray(a0, dtype=np.float64)
        self.a1 = np.asarray(a1, dtype=np.float64)
        if self.a0.shape != self.a1.shape or len(set(self.a0.shape)) != 1:
            raise ValueError("densities must share one cubic shape (got %s and %s)" % (self.a0.shape, self.a1.shape))
        self.size = self.a0.shape[0]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.box_length = float(box_length)
        n_fields = 1 if self.labels is None else int(self.labels.max()) + 1
        torch.manual_seed(settings.seed)
        self.flow = Flow(n_fields, settings.width, settings.depth, settings.steps).to(self.device, dtype)
        self.history = []
        self.stage_seconds = {}
        self._levels = {}

    # -- levels ----------------------------------------------------------------------------------------------
    def level_data(self, factor, rigidity=None):
        rigidity = self.settings.rigidity if rigidity is None else rigidity
        key = (factor, rigidity > 0)
        if key not in self._levels:
            self._levels[key] = _LevelData(self, factor, rigidity)
        return self._levels[key]

    # -- checkpoints -------------------------------------------------------------------------------------------
    def fingerprint(self):
        """What a checkpoint must share with this morph to be resumed: the densities, the parts and every
        result-affecting setting (:meth:`MorphSettings.fingerprint`)."""
        return Fingerprint(inputs={"a0": self.a0, "a1": self.a1, "labels": self.labels, "box_length": self.box_length},
                           training=json.loads(self.settings.fingerprint()))

    def _save(self, path, stage_index, iteration, optimizer):
        save_checkpoint(path, {"flow": self.flow.state_dict(), "flow_config": self.flow.config,
                               "optimizer": optimizer.state_dict() if optimizer is not None else None,
                               "stage": stage_index, "iteration": iteration, "history": self.history,
                               "stage_seconds": self.stage_seconds}, self._fingerprint)

    def _load(self, path, on_mismatch):
        state = load_checkpoint(path, self._fingerprint, self.device, on_mismatch)
        if state is None:
            return None
        self.flow.load_state_dict(state["flow"])
        self.history = list(state["history"])
        self.stage_seconds = dict(state.get("stage_seconds", {}))
        return state

    # -- training ----------------------------------------------------------------------------------------------
    def resume_state(self, checkpoint, on_mismatch="error"):
        """The state in ``checkpoint`` when it exists and was written for this morph, else None; one written
        for other maps or settings is refused or moved aside by ``on_mismatch``
        (:func:`..core.training.checkpoint.load_checkpoint`)."""
        self._fingerprint = self.fingerprint()
        if checkpoint and os.path.exists(checkpoint):
            return self._load(checkpoint, on_mismatch)
        return None

    def run(self, checkpoint=None, log=print, time_limit=None, on_mismatch="error", state=False):
        """Run every stage, resuming from ``checkpoint`` (see :meth:`resume_state`; ``state``: what it
        returned, when the caller asked first); returns the history."""
        start_stage, start_iter, opt_state = 0, 0, None
        if state is False:
            state = self.resume_state(checkpoint, on_mismatch)
        if state is not None:
            start_stage, start_iter, opt_state = state["stage"], state["iteration"], state["optimizer"]
            log("resuming from %s: stage %d, iteration %d" % (checkpoint, start_stage + 1, start_iter))
        t_start = time.time()
        for s_index, stage in enumerate(self.settings.stages):
            if s_index < start_stage:
                continue
            optimizer = torch.optim.Adam(self.flow.parameters(), lr=stage.lr)
            first = 0
            if s_index == start_stage and opt_state is not None:
                optimizer.load_state_dict(opt_state)
                first = start_iter
            self._run_stage(s_index, stage, optimizer, first, checkpoint, log)
            if time_limit and time.time() - t_start > time_limit:
                log("time limit reached after stage %d" % (s_index + 1))
                break
        return self.history

    def _stage_loss(self, stage, data):
        moved = self.flow(data.positions, data.parts)
        generated = splat(moved, data.masses, data.level)
        terms = {}
        if stage.kind == "w2":
            terms["w2"] = data.loss(generated) * self.box_length ** 2
            total = terms["w2"]
        else:
            diff = generated - data.target
            terms["l2"] = (diff * diff).sum() / (data.target * data.target).sum()
            total = terms["l2"]
        if data.mesh is not None and self.settings.rigidity > 0:
            terms["rigidity"] = data.mesh.energy(moved)
            total = total + self.settings.rigidity * terms["rigidity"]
        return total, terms

    def _run_stage(self, s_index, stage, optimizer, first, checkpoint, log):
        data = self.level_data(stage.factor)
        if stage.kind == "w2":
            data.loss = SinkhornLoss(data.target, data.eps, self.settings.sinkhorn_iters)
        label = "stage %d/%d (%s, %d^3 grid)" % (s_index + 1, len(self.settings.stages), stage.kind.upper(),
                                                 data.level.m)
        if first == 0:
            log("%s: %d particles%s, %d iterations, lr %g%s" % (
                label, data.n_particles, " + %d mesh points" % (data.n_points - data.n_particles)
                if data.n_points > data.n_particles else "", stage.iterations, stage.lr,
                ", Sinkhorn eps %.3g" % data.eps if stage.kind == "w2" else ""))
        key = str(s_index)
        previous = self.stage_seconds.get(key, 0.0)  # time spent on this stage before a resume
        t_session = time.time()
        for it in range(first, stage.iterations):
            optimizer.zero_grad(set_to_none=True)
            total, terms = self._stage_loss(stage, data)
            total.backward()
            optimizer.step()
            done = it + 1
            # History rows at the same iterations whether or not the run was resumed (loss.csv has no
            # extra rows after a resume); the first iteration of a resumed stage is only logged.
            recorded = done % self.settings.log_every == 0 or done == stage.iterations or it == 0
            if recorded or it == first:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                session = time.time() - t_session
                row = {"stage": s_index, "kind": stage.kind, "grid": data.level.m, "iteration": done,
                       "loss": float(total.detach()), "seconds": previous + session}
                row.update({k: float(v.detach()) for k, v in terms.items()})
                if recorded:
                    self.history.append(row)
                log("%s: iteration %d/%d, loss %.6g%s, %.1f it/s" % (
                    label, done, stage.iterations, row["loss"],
                    "".join(", %s %.4g" % (k, row[k]) for k in terms if len(terms) > 1),
                    (done - first) / max(session, 1e-9)))
            if checkpoint and (done % self.settings.checkpoint_every == 0 or done == stage.iterations):
                self.stage_seconds[key] = previous + time.time() - t_session
                nxt = (s_index + 1, 0, None) if done == stage.iterations else (s_index, done, optimizer)
                self._save(checkpoint, nxt[0], nxt[1], nxt[2])
        self.stage_seconds[key] = previous + time.time() - t_session

    # -- results -------------------------------------------------------------------------------------------------
    def trajectory(self, steps=None):
        """See :func:`trajectory`: the frames of this morph's flow on the full grid."""
        return trajectory(self.flow, self.a0, self.labels, self.device, self.dtype, steps)


def trajectory(flow, a0, labels=None, device="cpu", dtype=torch.float32, steps=None):
    """Full-grid frames of a trained flow applied to density ``a0``.

    Returns ``(maps, start, end, masses, index)``: the ``steps + 1``
    splatted densities (t = 0 .. 1), the particles' box-unit positions at
    t = 0 and t = 1, their masses and their voxel indices (z, y, x) in
    ``a0``.  ``steps`` (default: the trained number) integrates the same
    velocity field with another Euler step, e.g. for a smoother animation.
    """
    a0 = np.asarray(a0, dtype=np.float64)
    level = Level(a0.shape[0], 1)
    pos, masses, index, part = particles_from_density(a0, level, labels)
    parts = None
    if part is not None:
        order, parts = part_slices(part)
        pos, masses, index = pos[order], masses[order], index[order]
    device = torch.device(device)
    pos, masses = pos.to(device, dtype), masses.to(device, dtype)
    trained_steps = flow.steps
    flow.steps = int(steps or trained_steps)
    try:
        frames = flow.trajectory(pos, parts)
    finally:
        flow.steps = trained_steps
    with torch.no_grad():
        maps = [splat(x, masses, level) for x in frames]
    return maps, frames[0], frames[-1], masses, index
