"""CryoTRANS (Fan et al. 2024): morphs a high-resolution map f0 into a low-resolution target f1 with a
neural ODE; the transported f0 is a high-resolution estimate of the target, and the flow gives a
pseudo-trajectory.  Our own torch implementation.

Modules:
- :mod:`.inputs`: map checks, grids, partition masks;
- :mod:`.density`: thresholds, densities as weighted particles, splatting;
- :mod:`.flow`: the velocity MLP and the Euler integration;
- :mod:`.sinkhorn`: the Sinkhorn W2 loss (float64 matrix-product passes);
- :mod:`.rigidity`: the rigidity prior on a tetrahedral mesh;
- :mod:`.morph`: training stages, checkpoints and resume, the trajectory;
- :mod:`.pipeline`: the whole run (:func:`.pipeline.prepare_morph`, :func:`.pipeline.run_morph`,
  :func:`.pipeline.predict_morph`), as the command runs it;
- :mod:`.outputs`: the output file names.
"""
