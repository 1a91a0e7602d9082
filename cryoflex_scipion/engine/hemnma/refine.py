"""Joint refinement of rotation, shift and normal-mode amplitudes (batched Levenberg-Marquardt).

For each particle the parameters are ``theta = (omega, ds, q)``: a rotation vector applied in
the image frame (``A = exp([omega]x) A0``), a shift increment in pixels and the mode amplitudes.
The residual is the difference between the normalised image and the normalised model (both
masked, zero-mean, unit norm), so ``|r|^2 = 2 - 2 corr``: minimising it maximises the
correlation, with scale and offset of the image free.  The Jacobian is taken by forward
differences, all particles and all parameter offsets in one batched projection, and each
particle keeps its own damping factor (accept if the cost drops, else damp more).
"""
import torch

from ..core.fourier import apply_half_spectrum_filter, half_spectrum_filter

__all__ = ["normalise", "refine_poses"]

STEP_OMEGA = 1e-3   # rad
STEP_SHIFT = 2e-2   # px
STEP_AMPLITUDE = 0.5


def normalise(images, mask):
    """Zero mean and unit norm inside ``mask`` (images outside it are zeroed)."""
    m = mask.reshape(1, -1)
    flat = images.reshape(images.shape[0], -1)
    mean = (flat * m).sum(1, keepdim=True) / m.sum()
    out = (flat - mean) * m
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-20)


def _rotvec_matrix(omega):
    k = torch.zeros(*omega.shape[:-1], 3, 3, dtype=omega.dtype, device=omega.device)
    k[..., 0, 1], k[..., 0, 2] = -omega[..., 2], omega[..., 1]
    k[..., 1, 0], k[..., 1, 2] = omega[..., 2], -omega[..., 0]
    k[..., 2, 0], k[..., 2, 1] = -omega[..., 1], omega[..., 0]
    return torch.linalg.matrix_exp(k)


class _Problem:
    def __init__(self, reference, images, filters, mask, rot0, shift0, amp0, apix, chunk):
        self.reference, self.mask = reference, mask
        self.filters = None if filters is None else half_spectrum_filter(filters)
        self.rot0, self.shift0, self.amp0 = rot0, shift0, amp0
        self.size, self.apix, self.chunk = images.shape[-1], apix, chunk
        self.target = normalise(images, mask)
        self.n_modes = amp0.shape[1]
        self.n_params = 5 + self.n_modes
        steps = [STEP_OMEGA] * 3 + [STEP_SHIFT] * 2 + [STEP_AMPLITUDE] * self.n_modes
        self.steps = torch.tensor(steps, dtype=images.dtype, device=images.device)

    def model(self, theta, index):
        """Normalised model images for parameter sets ``theta`` (B, P) of particles ``index`` (B,)."""
        out = []
        for s in range(0, theta.shape[0], self.chunk):
            th, idx = theta[s:s + self.chunk], index[s:s + self.chunk]
            rot = _rotvec_matrix(th[:, :3]) @ self.rot0[idx]
            img = self.reference.project(rot, self.shift0[idx] + th[:, 3:5], self.amp0[idx] + th[:, 5:],
                                         self.size, self.apix)
            if self.filters is not None:
                img = apply_half_spectrum_filter(img, self.filters[idx])
            out.append(normalise(img, self.mask))
        return torch.cat(out)

    def residual(self, theta, index):
        return self.model(theta, index) - self.target[index]

    def jacobian(self, theta, index):
        """Residual (B, R) and forward-difference Jacobian (B, R, P) at ``theta``."""
        b, p = theta.shape
        offsets = torch.cat([torch.zeros(1, p, dtype=theta.dtype, device=theta.device), torch.diag(self.steps)])
        stacked = (theta[:, None, :] + offsets[None]).reshape(b * (p + 1), p)
        idx = index[:, None].expand(b, p + 1).reshape(-1)
        res = self.residual(stacked, idx).reshape(b, p + 1, -1)
        centre = res[:, 0]
        jac = (res[:, 1:] - centre[:, None]) / self.steps[None, :, None]
        return centre, jac.transpose(1, 2)


def refine_poses(reference, images, filters, mask, rot0, shift0, amp0, apix, iterations=10, amplitude_bound=None,
                 chunk=None, tolerance=1e-7):
    """Refine (rotation, shift, amplitudes) of every particle; returns dict with rotations (N,3,3),
    shift_px (N,2), amplitudes (N,M), correlation (N,).

    A particle stops early (and leaves the batch, so the others run faster) once an accepted
    step lowers its cost by less than ``tolerance`` (absolute, on 2 - 2 corr), or its damping
    has grown so large that steps no longer move it.
    """
    if chunk is None:  # images per projection call: large on a GPU (throughput), small on a CPU (memory)
        chunk = 2048 if images.device.type == "cuda" else 256
    problem = _Problem(reference, images, filters, mask, rot0, shift0, amp0, apix, chunk)
    n, p = images.shape[0], problem.n_params
    dev, dt = images.device, images.dtype
    theta = torch.zeros(n, p, dtype=dt, device=dev)
    lam = torch.full((n,), 1e-2, dtype=dt, device=dev)
    bound = None if amplitude_bound is None else torch.as_tensor(amplitude_bound, dtype=dt, device=dev)
    active = torch.arange(n, device=dev)
    res, jac = problem.jacobian(theta, active)
    cost = (res * res).sum(1)
    final_cost = cost.clone()
    for _ in range(iterations):
        if active.numel() == 0:
            break
        jt = jac.transpose(1, 2)
        jtj = jt @ jac
        jtr = (jt @ res[:, :, None])[..., 0]
        diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(1e-12)
        l = lam[active]
        step = -torch.linalg.solve(jtj + l[:, None, None] * torch.diag_embed(diag), jtr)
        trial = theta[active] + step
        if bound is not None:
            a0 = amp0[active]
            trial = torch.cat([trial[:, :5], (a0 + trial[:, 5:]).clamp(-bound, bound) - a0], 1)
        new_res, new_jac = problem.jacobian(trial, active)
        new_cost = (new_res * new_res).sum(1)
        better = new_cost < cost
        gain = torch.where(better, cost - new_cost, torch.zeros_like(cost))
        theta[active] = torch.where(better[:, None], trial, theta[active])
        res = torch.where(better[:, None], new_res, res)
        jac = torch.where(better[:, None, None], new_jac, jac)
        cost = torch.where(better, new_cost, cost)
        lam[active] = torch.where(better, l * 0.3, l * 4.0).clamp(1e-7, 1e7)
        final_cost[active] = cost
        keep = ~((better & (gain < tolerance)) | (lam[active] > 1e5))
        active, res, jac, cost = active[keep], res[keep], jac[keep], cost[keep]
    rot = _rotvec_matrix(theta[:, :3]) @ rot0
    return {"rotations": rot, "shift_px": shift0 + theta[:, 3:5], "amplitudes": amp0 + theta[:, 5:],
            "correlation": 1.0 - final_cost / 2.0}
