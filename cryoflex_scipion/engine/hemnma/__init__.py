"""HEMNMA (Jin et al. 2014; Harastani et al. 2020): elastic 3D-to-2D alignment of particle images with
the normal modes of a reference.  Per particle: normal-mode amplitudes, orientation and shifts
against the CTF-modulated projection of the deformed reference.  Pure numpy/torch.

Modules:
- :mod:`.model`: the elastic reference (Gaussian atoms deformed along modes, projected with CTF);
- :mod:`.search`: global search over orientations and deformations with a template bank;
- :mod:`.refine`: batched Levenberg-Marquardt refinement of amplitudes, angles and shifts;
- :mod:`.align`: the aligner that chains them per batch (:class:`.align.ElasticAligner`).
"""
