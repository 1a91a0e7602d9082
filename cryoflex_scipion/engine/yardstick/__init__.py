"""Yardsticks for continuous heterogeneity: simulated datasets with per-particle ground truth
(conformation and its map), and their scoring with CryoBench's metrics.

AdK-1D: particles from every frame of the DIMS closed -> open transition of adenylate kinase
(98 frames; the frame index and the LID-NMP distance, 19.8 -> 35.8 A, are 1-D ground-truth latents,
as IgG-1D's rotation angle in CryoBench), 1,000 particles per frame by default, 128 px at 1 A/px,
CTF, uniform random poses, white noise at CryoBench's SNR; one ground-truth map per frame.  The
per-image AU-FSC of a method's volumes against these maps and the Spearman correlation of its
latents with the frame index are the scores (:mod:`..core.metrics`).

Modules:
- :mod:`.trajectory`: trajectory ``.npz`` matched to a reference model (heavy atoms), LID-NMP distance;
- :mod:`.pipeline`: :func:`~.pipeline.build` (checks, particles streamed to disk, ground truth, maps),
  :func:`~.pipeline.load_dataset` (a built folder; maps of any frame or coordinates on the fly);
- :mod:`.scoring`: per-image AU-FSC of per-image volumes, latent PC1 correlations;
- :mod:`.outputs`: the file names.

Typical build (what ``python -m cryoflex_scipion.engine yardstick build`` does)::

    traj = load_trajectory("adk_dims_frames.npz", "adk_dims_frame000.pdb")
    summary = build("adk1d", traj, BuildSettings(particles_per_frame=1000, snr=0.01), device)
    data = load_dataset("adk1d")
    curves, scores = score_volumes(data, data.ground_truth()["frame"][ids], volumes_of_ids)
"""
from .outputs import gt_map_file
from .pipeline import (CRYOBENCH_CROP_FACTOR, SNR_CONVENTIONS, BuildSettings, Dataset, FrameConformations, build,
                       check_build, load_dataset, parse_frames)
from .scoring import GroundTruthMaps, latent_correlations, latent_pc1, score_volumes
from .trajectory import Trajectory, is_hydrogen, lid_nmp_distance, load_trajectory

__all__ = ["gt_map_file", "CRYOBENCH_CROP_FACTOR", "SNR_CONVENTIONS", "BuildSettings", "Dataset",
           "FrameConformations", "build", "check_build", "load_dataset", "parse_frames", "GroundTruthMaps",
           "latent_correlations", "latent_pc1", "score_volumes", "Trajectory", "is_hydrogen", "lid_nmp_distance",
           "load_trajectory"]
