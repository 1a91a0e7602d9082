"""Conformational landscapes of per-particle flexibility coordinates (normal-mode amplitudes of HEMNMA /
DeepHEMNMA, or any method's latents): dimension reduction, grouping, group reconstructions, centroid
structures and animations.  Pure numpy/torch.

Modules:
- :mod:`.reduce`: PCA (with a saved projector) and UMAP (optional ``umap-learn``);
- :mod:`.groups`: k-means, Gaussian mixture, ranges on the axes, equal-population bins, dense cores;
- :mod:`.pipeline`: the whole run (:func:`.pipeline.run_landscape`), as the command runs it;
- :mod:`.outputs`: the output file names.
"""
