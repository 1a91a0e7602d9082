"""Conversions between Scipion objects and the engine's files.

This package is the only place that knows both sides: protocols call it to
turn inputs into files and engine outputs into Scipion objects.
"""
from .atoms import (atomstruct_file, atomstruct_to_npz, atomstructs_to_frames, light_atoms,  # noqa: F401
                    trajectory_to_frames)
from .flex import (fill_flex_particles, fill_latent_particles, has_ground_truth, latent_flex_info,  # noqa: F401
                   nma_labels_to_npz, read_latents, set_latent_flex_info, set_nma_flex_info)
from .modes import fill_normal_modes, modes_to_array, read_mode_file  # noqa: F401
from .particles import (fill_particles, matrices_from_pose, particle_ids, particles_to_table,  # noqa: F401
                        pose_from_matrices, write_particles_star)
from .volumes import volume_file, volume_from_mrc, volume_origin, volume_to_mrc  # noqa: F401
