"""Normal mode analysis (elastic networks: ANM, RTB; sparse, equal to ProDy) and pseudoatomic models
of maps.  Pure numpy/scipy/torch.

Modules:
- :mod:`.elastic`: Hessians, ANM and RTB modes (:func:`.elastic.compute_modes`), blocks, cutoffs;
- :mod:`.analysis`: collectivity, ContinuousFlex scores, fluctuations;
- :mod:`.pseudoatoms`: Gaussians fitted to a map;
- :mod:`.formats`: PDB lines, NMD files, animations;
- :mod:`.pipeline`: the whole runs (:func:`.pipeline.run_nma`, :func:`.pipeline.run_pseudoatoms`);
- :mod:`.outputs`: the output file names.
"""
