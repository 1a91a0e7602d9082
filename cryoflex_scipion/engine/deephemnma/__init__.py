"""DeepHEMNMA (Hamitouche & Jonic, Front. Mol. Biosci. 2022): a network learns HEMNMA's normal-mode
amplitudes, orientations and shifts on a subset of particles and predicts them for the rest.
Our own torch implementation; pure numpy/torch.

Modules:
- :mod:`.network`: ResNet-34 (1-channel input) + MLP 1000-512-128 heads, shared or separate;
- :mod:`.labels`: labels from STAR / .npz / ground-truth CSV, Mahalanobis filtering,
  standardisation, sign-invariant quaternion loss;
- :mod:`.data`: images Fourier-cropped and normalised per image, streamed from disk or cached on the
  device (:mod:`..core.training.cache`);
- :mod:`.augment`: in-plane rotations with the labels turned alike (exact, Fourier shears);
- :mod:`.train`: L1/Adam, warmup + cosine, time limit, checkpoints and resume (only for the same
  inputs and settings), the step as a CUDA graph, several GPUs (DDP), on :mod:`..core.training`;
- :mod:`.predict`: batched inference, quaternions -> ZYZ Euler angles;
- :mod:`.model_file`: the ``.pt`` model format with JSON metadata;
- :mod:`.pipeline`: training and prediction of a particle set, as the command runs them;
- :mod:`.outputs`: the output file names.

Typical prediction (what ``python -m cryoflex_scipion.engine deephemnma predict`` does)::

    net, scaler, meta = load_model("model.pt", device)
    images = ParticleImages(read_particles("particles.star"), meta["working_size"])
    result = predict_particles(net, images, scaler, device)   # amplitudes, quaternion, euler, origin_A
"""
from .augment import apply_turn, random_inplane, rotate_images_exact, rotate_labels, turn_factors
from .data import ParticleImages, prepare_images, working_geometry
from .labels import (LabelError, Labels, LabelScaler, labels_from_csv, labels_from_npz, labels_from_table,
                     outlier_mask, parse_mode_list, quaternion_l1, target_loss)
from .model_file import FORMAT, ModelFileError, load_model, model_metadata, save_model
from .network import RESNET34_BLOCKS, DeepHEMNMANet, build_network, count_parameters
from .predict import infer, predict_images, predict_particles, to_pose
from .train import (TrainConfig, TrainingData, TrainingJob, TrainStep, evaluate, job_data, make_optimizer,
                    run_distributed, run_job, split, train, training_fingerprint)

__all__ = ["apply_turn", "random_inplane", "rotate_images_exact", "rotate_labels", "turn_factors", "ParticleImages",
           "prepare_images", "working_geometry", "LabelError", "Labels", "LabelScaler", "labels_from_csv",
           "labels_from_npz", "labels_from_table", "outlier_mask", "parse_mode_list", "quaternion_l1", "target_loss",
           "FORMAT", "ModelFileError", "load_model", "model_metadata", "save_model", "RESNET34_BLOCKS",
           "DeepHEMNMANet", "build_network", "count_parameters", "infer", "predict_images", "predict_particles",
           "to_pose", "TrainConfig", "TrainingData", "TrainingJob", "TrainStep", "evaluate", "job_data",
           "make_optimizer", "run_distributed", "run_job", "split", "train", "training_fingerprint"]
