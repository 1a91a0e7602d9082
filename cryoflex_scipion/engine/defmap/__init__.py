"""DEFMap (Matsumoto et al., Nat. Mach. Intell. 2021): atomic fluctuations (log10 RMSF) from local
cryo-EM density with a 3D CNN.  Our own torch implementation; pure numpy/torch/scipy.

Modules:
- :mod:`.grid`: non-cubic grids, voxel <-> physical (x, y, z A) with the map origin, filters, resampling;
- :mod:`.preprocess`: low-pass, 1.5 A voxels, z-score, clamping, threshold (:func:`prepare_map`);
- :mod:`.subvoxels`: 10^3 sub-voxels gathered in batches on the device, rotation augmentation;
- :mod:`.network`: the paper's network (5,774,785 parameters);
- :mod:`.labels`: RMSF from MD trajectories and B-factors, per-voxel labels;
- :mod:`.simulate`: maps of atomic models blurred per atom by their B-factors (training data);
- :mod:`.train`: training set, augmentation, early stopping, checkpoints;
- :mod:`.predict`: streamed prediction, maps, per-atom and per-residue values, baseline;
- :mod:`.model_file`: the ``.pt`` model format with JSON metadata.

Typical prediction (what ``python -m cryoflex_scipion.engine defmap predict`` does)::

    net, meta = load_model("model.pt", resolution=5.0, device=device)
    prepared = prepare_map(volume, apix, origin, meta["resolution"], device=device)
    centres = prediction_voxels(prepared.grid, kept_voxels(prepared), atoms.coords)
    log_rmsf = predict_prepared(net, meta, prepared, centres)
"""
from .grid import Grid
from .labels import bfactor_rmsf, trajectory_rmsf, voxel_labels
from .model_file import ModelFileError, load_model, model_metadata, save_model
from .network import N_PARAMETERS, DefmapNet
from .predict import (input_grid_map, map_intensity_at_atoms, predict_prepared, prediction_voxels, residue_rows,
                      sample_at_atoms, sparse_map, zscore)
from .preprocess import DEFAULT_THRESHOLD, VOXEL_SIZE, MapError, PreparedMap, kept_voxels, prepare_map
from .simulate import grid_around, simulate_map
from .train import TrainConfig, TrainingSet, make_item, pearson, train

__all__ = ["Grid", "bfactor_rmsf", "trajectory_rmsf", "voxel_labels", "ModelFileError", "load_model",
           "model_metadata", "save_model", "N_PARAMETERS", "DefmapNet", "input_grid_map", "map_intensity_at_atoms",
           "predict_prepared", "prediction_voxels", "residue_rows", "sample_at_atoms", "sparse_map", "zscore",
           "DEFAULT_THRESHOLD", "VOXEL_SIZE", "MapError", "PreparedMap", "kept_voxels", "prepare_map", "grid_around",
           "simulate_map", "TrainConfig", "TrainingSet", "make_item", "pearson", "train"]
