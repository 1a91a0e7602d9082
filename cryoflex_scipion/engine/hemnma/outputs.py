"""Output files of ``hemnma`` (written by the command, read by the protocol and the viewers)."""
from ..core.outputs import SUMMARY  # noqa: F401

STAR = "particles.star"     # the particles with new poses, cryoflexAmplitude<mode>, cryoflexFitQuality, ...
RESULTS = "results.npz"     # euler, origin_A, amplitudes, cost, fit_quality(_error), poor_fit, mahalanobis, outlier,
                            # mode_numbers
BATCHES = "batches"         # folder of finished batches (resume)
FILES = {"star": STAR, "results": RESULTS}


def batch_file(index):
    """Path of one batch's results, relative to the output folder."""
    return "%s/batch_%06d.npz" % (BATCHES, index)
