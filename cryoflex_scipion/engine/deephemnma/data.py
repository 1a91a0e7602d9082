"""Particle images for the network: :class:`..core.training.cache.ParticleCache` with DeepHEMNMA's
normalisation.

Every image is Fourier-cropped to the working size and normalised to zero mean and unit standard
deviation over the box (:class:`..core.training.cache.PerImageNormaliser`: the network regresses
poses and amplitudes, to which one image's contrast is irrelevant).  Prediction and training
prepare images the same way, so a model sees at prediction what it saw in training.  Caching on
the device or in host memory, or streaming from the stacks: see the core module.
"""
from ..core.fourier import fourier_resize
from ..core.training.cache import ParticleCache, PerImageNormaliser, working_geometry

__all__ = ["prepare_images", "ParticleImages", "working_geometry"]


def prepare_images(images, size):
    """``(N, D, D)`` float tensor -> Fourier-cropped to ``size`` and normalised per image (float32)."""
    x = images.float()
    if x.shape[-1] != size:
        x = fourier_resize(x, size)
    return PerImageNormaliser()(x)


class ParticleImages(ParticleCache):
    """Prepared images of a particle table (or of an array ``(N, D, D)``), by position, normalised per
    image (see :class:`..core.training.cache.ParticleCache` for ``get``, ``batches``, ``load``)."""

    def __init__(self, source, size, data_root=None):
        super().__init__(source, size, data_root, PerImageNormaliser())
