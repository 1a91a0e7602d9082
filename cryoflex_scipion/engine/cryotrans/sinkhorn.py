"""Entropic optimal transport between two densities on the same grid (log-domain Sinkhorn).

Cost ``c(x, y) = |x - y|^2`` in box units (see :mod:`.density`), entropic
parameter ``eps`` in the same units.  On a grid of ``m`` voxels per axis the
Gibbs kernel ``exp(-c / eps)`` factorises over the axes, so the "soft
c-transform" of a log-potential ``phi``

    blur(phi)[i] = log sum_j exp(phi[j] - |i - j|^2 / b),   b = eps * m^2  (voxels^2)

is three one-dimensional log-sum-exp passes (O(m^4), no m^6 matrix).  The
CryoTRANS loss (Shen et al. 2024) runs a few Sinkhorn iterations from zero

    phi0 = log a - blur(phi1),   phi1 = log b - blur(phi0)

and uses the dual value ``eps (<phi0, a> + <phi1, b> - sum exp(phi0 + blur(phi1)))``
as the loss, with gradient ``eps * phi0`` with respect to ``a`` (envelope
theorem: the potentials are not differentiated).  Values here are divided by
the total mass, so the loss is per unit mass, in box units squared.

Each one-dimensional pass is a float64 matrix product with ``exp(-cost)``
after subtracting the row maximum (:func:`_lse_gemm`), exact as long as a
row of potentials spans less than 600; rows spanning more (not seen in
practice) make the evaluation run again with true log-sum-exp passes (a
fused torch.compile kernel on GPUs, chunks elsewhere).  The check costs one
host synchronisation per loss evaluation.  ``CRYOFLEX_SINKHORN_GEMM=0``
always uses the log-sum-exp pass; ``CRYOFLEX_COMPILE=0`` disables compiling.
"""
import math
import os

import torch

__all__ = ["kernel_cost", "blur", "SinkhornLoss", "sinkhorn_cost", "sinkhorn_divergence", "level_eps"]

_TINY = 1e-30
_COMPILED = {}


def level_eps(eps, m, min_width_px=1.0):
    """The entropic parameter used on a grid of ``m`` voxels per axis.

    ``eps`` (box units) gives a kernel ``exp(-d^2 / (eps m^2))`` over ``d``
    voxels; on coarse grids of the multi-scale schedule that kernel would be
    narrower than a voxel and Sinkhorn would no longer move mass between
    neighbours, so it is widened to ``b >= min_width_px^2`` voxels^2.
    """
    return max(float(eps), float(min_width_px) ** 2 / float(m * m))


def kernel_cost(m, eps, device=None, dtype=torch.float32):
    """``(m, m)`` matrix ``(i - j)^2 / (eps m^2)``: the 1D cost of the Gibbs kernel, in units of eps."""
    i = torch.arange(m, device=device, dtype=torch.float64)
    return (((i[:, None] - i[None, :]) ** 2) / (eps * m * m)).to(dtype)


def _lse_pass(x, cost):
    """``out[r, i] = logsumexp_j (x[r, j] - cost[i, j])`` for ``x (R, m)``."""
    return torch.logsumexp(x[:, None, :] - cost, dim=-1)


def _lse_chunked(x, cost, max_elements=1 << 25):
    rows = max(1, max_elements // (cost.shape[0] * cost.shape[1]))
    if rows >= x.shape[0]:
        return _lse_pass(x, cost)
    return torch.cat([_lse_pass(x[s:s + rows], cost) for s in range(0, x.shape[0], rows)])


STATS = {"rows": 0, "exact_rows": 0}
_RANGE_LIMIT = 600.0  # float64: exp(-600) is far above underflow (exp(-708))


def _lse_gemm(x, cost, exact, gibbs=None, wide_rows=None):
    """The 1D pass as a float64 matrix product, exact for rows whose range is below 600.

    ``log sum_j exp(x_j - c_ij) = M + log sum_j exp(x_j - M) K_ij`` with the row
    maximum ``M``: when ``x`` spans less than 600 every term that matters is
    representable (the ``j = i`` term alone is at least exp(-600) of the
    maximum, and dropped underflows are below exp(-708)), so the sum loses
    nothing.  Rows spanning more are redone by ``exact`` (log-sum-exp) here,
    or, when ``wide_rows`` (a device counter) is given, only counted: the
    caller checks the counter once per loss evaluation and redoes the whole
    evaluation exactly if it is not zero (no host synchronisation per pass).
    """
    xd = x.double()
    top = xd.amax(1, keepdim=True)
    span = top[:, 0] - xd.amin(1)
    gibbs = torch.exp(-cost.double()) if gibbs is None else gibbs
    out = (top + torch.log(torch.exp(xd - top) @ gibbs.T)).to(x.dtype)
    STATS["rows"] += x.shape[0]
    if wide_rows is not None:
        wide_rows += (span >= _RANGE_LIMIT).sum()
        return out
    wide = torch.nonzero(span >= _RANGE_LIMIT)[:, 0]
    if len(wide):
        STATS["exact_rows"] += len(wide)
        out[wide] = exact(x[wide], cost)
    return out


def _exact_fn(device):
    """The exact log-sum-exp pass: one fused kernel on a GPU (torch.compile), chunks elsewhere."""
    if device.type != "cuda" or os.environ.get("CRYOFLEX_COMPILE", "1") == "0":
        return _lse_chunked
    if "cuda" not in _COMPILED:
        try:
            _COMPILED["cuda"] = torch.compile(_lse_pass, dynamic=True)
        except Exception:  # no compiler backend: chunked eager version
            _COMPILED["cuda"] = _lse_chunked
    return _COMPILED["cuda"]


class AxisKernel:
    """The 1D Gibbs kernel of one grid and one eps, and how its log-sum-exp pass is computed.

    Holds the cost ``(i - j)^2 / b`` and, for the fast pass, ``exp(-cost)`` in
    float64 (computed once).  ``exact=True`` forces the log-sum-exp pass;
    ``CRYOFLEX_SINKHORN_GEMM=0`` makes it the default.
    """

    def __init__(self, cost):
        self.cost = cost
        self.use_gemm = os.environ.get("CRYOFLEX_SINKHORN_GEMM", "1") != "0"
        self.gibbs = torch.exp(-cost.double()) if self.use_gemm else None
        self.exact_pass = _exact_fn(cost.device)
        self.exact = False
        self.wide_rows = None  # device counter while a deferred-check evaluation runs

    def __call__(self, x):
        if self.exact or not self.use_gemm:
            return self.exact_pass(x, self.cost)
        return _lse_gemm(x, self.cost, self.exact_pass, self.gibbs, self.wide_rows)


def blur(phi, kernel):
    """Soft c-transform of a log-potential ``phi (m, m, m)``: log-sum-exp against the kernel on each axis.

    ``kernel`` is an :class:`AxisKernel` or a cost matrix from :func:`kernel_cost`.
    """
    m = phi.shape[-1]
    lse = kernel if isinstance(kernel, AxisKernel) else AxisKernel(kernel)
    x = phi
    for _ in range(3):
        # Reduce over the last axis, then rotate the axes so the next one comes last;
        # after three passes the axes are back in their order.
        x = lse(x.reshape(-1, m)).reshape(m, m, m).permute(2, 0, 1).contiguous()
    return x


def _log(a):
    # max as a tensor: no host synchronisation
    return torch.log(torch.maximum(a, a.max() * _TINY))


def _sinkhorn(la, lb, kernel, n_iter):
    phi1 = torch.zeros_like(la)
    for _ in range(n_iter):
        phi0 = la - blur(phi1, kernel)
        phi1 = lb - blur(phi0, kernel)
    return phi0, phi1


def _dual(a, b, phi0, phi1, kernel, eps):
    """Dual objective per unit mass (box units^2)."""
    mass = a.sum()
    value = (phi0 * a).sum() + (phi1 * b).sum() - torch.exp(phi0 + blur(phi1, kernel)).sum()
    return eps * value / mass


def _evaluate(a, b, lb, kernel, eps, n_iter):
    """Potentials and dual value; fast passes with one deferred check of their validity."""
    la = _log(a)
    if not kernel.use_gemm:
        phi0, phi1 = _sinkhorn(la, lb, kernel, n_iter)
        return phi0, _dual(a, b, phi0, phi1, kernel, eps)
    kernel.wide_rows = torch.zeros((), dtype=torch.long, device=a.device)
    try:
        phi0, phi1 = _sinkhorn(la, lb, kernel, n_iter)
        value = _dual(a, b, phi0, phi1, kernel, eps)
        wide = int(kernel.wide_rows)  # the one host synchronisation of an evaluation
    finally:
        kernel.wide_rows = None
    if wide:
        STATS["exact_rows"] += wide
        kernel.exact = True
        try:
            phi0, phi1 = _sinkhorn(la, lb, kernel, n_iter)
            value = _dual(a, b, phi0, phi1, kernel, eps)
        finally:
            kernel.exact = False
    return phi0, value


class _SinkhornFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, lb, kernel, eps, n_iter):
        with torch.no_grad():
            phi0, value = _evaluate(a, b, lb, kernel, eps, n_iter)
        ctx.save_for_backward(phi0, a.sum())
        ctx.eps = eps
        return value

    @staticmethod
    def backward(ctx, grad):
        phi0, mass = ctx.saved_tensors
        return grad * ctx.eps * phi0 / mass, None, None, None, None, None


class SinkhornLoss:
    """The CryoTRANS W2 loss between a generated density and a fixed target on one grid.

    Every call starts Sinkhorn from zero potentials, as the paper does.
    (Keeping the potentials between calls was tried: with the flow changing
    the density each step the stale potentials bias the gradient, and the
    generated map of the AdK test came out 9.2 A instead of 4.5 A.)
    """

    def __init__(self, target, eps, n_iter=5):
        self.target = target
        self.m = target.shape[-1]
        self.eps = float(eps)
        self.n_iter = int(n_iter)
        self.kernel = AxisKernel(kernel_cost(self.m, self.eps, target.device, target.dtype))
        self.log_target = _log(target)

    def __call__(self, generated):
        return _SinkhornFunction.apply(generated, self.target, self.log_target, self.kernel, self.eps, self.n_iter)


def _eps_schedule(eps, m, start=None, factor=0.5):
    """Decreasing entropic parameters from about the box scale down to ``eps`` (epsilon scaling)."""
    start = start if start is not None else 1.0 / 16.0
    values = []
    e = max(start, eps)
    while e > eps * (1 + 1e-9):
        values.append(e)
        e *= factor
    values.append(eps)
    return values


def sinkhorn_cost(a, b, eps, n_iter=50, scaling=True, symmetric=False):
    """Entropic OT dual value ``OT_eps(a, b)`` per unit mass (box units^2), near convergence.

    Uses epsilon scaling (coarse-to-fine entropic parameters, ``n_iter``
    iterations each) so that small ``eps`` converges in a few hundred passes.
    ``symmetric`` (``a`` is ``b``) uses the averaged fixed-point iteration.
    """
    m = a.shape[-1]
    la, lb = _log(a), _log(b)
    schedule = _eps_schedule(eps, m) if scaling else [eps]
    phi0 = torch.zeros_like(la)
    phi1 = torch.zeros_like(lb)
    with torch.no_grad():
        for i, e in enumerate(schedule):
            cost = AxisKernel(kernel_cost(m, e, a.device, a.dtype))
            if i > 0:  # potentials scale with 1/eps: carry eps * phi across the schedule
                ratio = schedule[i - 1] / e
                phi0, phi1 = phi0 * ratio, phi1 * ratio
            for _ in range(n_iter):
                if symmetric:
                    phi0 = 0.5 * (phi0 + la - blur(phi0, cost))
                    phi1 = phi0
                else:
                    phi0 = la - blur(phi1, cost)
                    phi1 = lb - blur(phi0, cost)
        return float(_dual(a, b, phi0, phi1, cost, schedule[-1]))


def sinkhorn_divergence(a, b, eps, n_iter=50):
    """Debiased Sinkhorn divergence ``OT(a,b) - (OT(a,a) + OT(b,b)) / 2`` per unit mass (box units^2).

    It removes the entropic bias: for a density and its copy translated by
    ``d`` it equals ``|d|^2`` exactly (up to convergence and the box edges),
    and it tends to W2^2 as ``eps`` goes to 0.  ``a`` and ``b`` are rescaled
    to the same mass first.
    """
    a = a / a.sum()
    b = b / b.sum()
    return (sinkhorn_cost(a, b, eps, n_iter) - 0.5 * sinkhorn_cost(a, a, eps, n_iter, symmetric=True)
            - 0.5 * sinkhorn_cost(b, b, eps, n_iter, symmetric=True))


def w2_angstrom(value_box_units, box_length_A):
    """A transport cost per unit mass in box units^2 as an RMS displacement in A."""
    return math.sqrt(max(value_box_units, 0.0)) * box_length_A
