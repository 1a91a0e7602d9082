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
