"""The elastic reference of HEMNMA: Gaussian atoms moved along normal modes, projected with a CTF."""
import torch

from ..core.atoms import deform
from ..core.fourier import fft_centered, ifft_centered
from ..core.projection import project_gaussians

__all__ = ["ElasticReference", "CTF_FULL", "CTF_FLIPPED", "CTF_NONE"]

CTF_FULL, CTF_FLIPPED, CTF_NONE = "full", "phase-flipped", "none"


class ElasticReference:
    """Reference coordinates (centred, box frame), atom weights, normal modes (M, A, 3) and atom width.

    ``project`` renders, for N particles, the projection of ``reference + sum_k q_k mode_k`` in
    orientation A, moved by a shift, multiplied by each particle's CTF (or its absolute value for
    phase-flipped images), at a given image size and pixel size.  Everything is differentiable.
    """

    def __init__(self, coords, weights, modes, sigma, device="cpu", dtype=torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        self.coords = torch.as_tensor(coords, device=self.device, dtype=dtype)
        self.weights = torch.as_tensor(weights, device=self.device, dtype=dtype)
        self.modes = torch.as_tensor(modes, device=self.device, dtype=dtype)
        self.sigma = float(sigma)
        if self.modes.ndim != 3 or self.modes.shape[1:] != self.coords.shape:
            raise ValueError("modes have shape %s but the reference has %d atoms"
                             % (tuple(self.modes.shape), self.coords.shape[0]))

    def coarse_grained(self, groups):
        """One bead per group of atoms (e.g. per residue): weight-averaged position and modes
        (the deformation is linear, so bead motion is the mean atom motion), summed weight, and a
        width that adds the group's radius of gyration to the atom width.  For the global search
        and the coarse refinement, where the images are low-pass and the full model is wasted work.
        """
        groups = torch.as_tensor(groups, device=self.device, dtype=torch.long)
        n_groups = int(groups.max()) + 1
        w = self.weights
        wsum = torch.zeros(n_groups, device=self.device, dtype=self.dtype).index_add_(0, groups, w)
        frac = w / wsum[groups]
        centre = torch.zeros(n_groups, 3, device=self.device, dtype=self.dtype).index_add_(
            0, groups, self.coords * frac[:, None])
        modes = torch.zeros(self.n_modes, n_groups, 3, device=self.device, dtype=self.dtype).index_add_(
            1, groups, self.modes * frac[None, :, None])
        spread = ((self.coords - centre[groups]) ** 2).sum(1) * frac
        rg2 = torch.zeros(n_groups, device=self.device, dtype=self.dtype).index_add_(0, groups, spread) / 3.0
        sigma = torch.sqrt(self.sigma ** 2 + rg2)
        bead = ElasticReference(centre, wsum, modes, float(self.sigma), self.device, self.dtype)
        bead.sigma = float(sigma.mean())  # one width for all beads: the mean residue size
        return bead

    @property
    def n_modes(self):
        return self.modes.shape[0]

    def radius(self):
        """Radius (A) of the reference around the box centre."""
        return float(self.coords.norm(dim=1).max())

    def sigma_at(self, apix):
        """Atom width used at a pixel size: never below half a pixel, so that coarse
        (Fourier-cropped) levels are compared with a model of similar bandwidth."""
        return max(self.sigma, 0.5 * apix)

    def project(self, rotations, shifts_px, amplitudes, size, apix, ctf=None):
        coords = deform(self.coords, self.modes, amplitudes) if self.n_modes else self.coords
        images = project_gaussians(coords, self.weights, self.sigma_at(apix), rotations, size, apix,
                                   shifts_px=shifts_px)
        if ctf is not None:
            images = ifft_centered(fft_centered(images) * ctf)
        return images
