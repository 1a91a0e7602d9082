# -*- coding: utf-8 -*-
# **************************************************************************
# *
# * GPL-3.0-or-later, CryoFlex developers
# *
# * This program is free software; you can redistribute it and/or modify
# * it under the terms of the GNU General Public License as published by
# * the Free Software Foundation; either version 3 of the License, or
# * (at your option) any later version.
# *
# * This program is distributed in the hope that it will be useful,
# * but WITHOUT ANY WARRANTY; without even the implied warranty of
# * MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
# * GNU General Public License for more details.
# *
# **************************************************************************
"""
@article{Harastani2020,
title = {Hybrid Electron Microscopy Normal Mode Analysis with Scipion},
author = {Harastani, Mohamad and Sorzano, Carlos Oscar S. and Jonić, Slavica},
journal = {Protein Science},
volume = {29},
number = {1},
pages = {223--236},
year = {2020},
doi = {https://doi.org/10.1002/pro.3772},
}

@article{Jin2014,
title = {Iterative Elastic 3D-to-2D Alignment Method Using Normal Modes for Studying Structural Dynamics of Large Macromolecular Complexes},
author = {Jin, Qiyu and Sorzano, C. O. S. and de la Rosa-Trevín, J. M. and Bilbao-Castro, J. R. and Núñez-Ramírez, R. and Llorca, O. and Tama, F. and Jonić, S.},
journal = {Structure},
volume = {22},
pages = {496--506},
year = {2014},
doi = {https://doi.org/10.1016/j.str.2014.01.004},
}

@article{Hamitouche2022,
title = {DeepHEMNMA: ResNet-based hybrid analysis of continuous conformational heterogeneity in cryo-EM single particle images},
author = {Hamitouche, Ilyes and Jonic, Slavica},
journal = {Frontiers in Molecular Biosciences},
volume = {9},
pages = {965645},
year = {2022},
doi = {https://doi.org/10.3389/fmolb.2022.965645},
}

@article{Punjani2023,
title = {3DFlex: determining structure and motion of flexible proteins from cryo-EM},
author = {Punjani, Ali and Fleet, David J.},
journal = {Nature Methods},
volume = {20},
number = {6},
pages = {860--870},
year = {2023},
doi = {https://doi.org/10.1038/s41592-023-01853-8},
}

@inproceedings{Ducrocq2025,
title = {cryoSPHERE: Single-Particle HEterogeneous REconstruction from cryo EM},
author = {Ducrocq, Gabriel and Grunewald, Lukas and Westenhoff, Sebastian and Lindsten, Fredrik},
booktitle = {International Conference on Learning Representations (ICLR)},
year = {2025},
eprint = {2407.01574},
archiveprefix = {arXiv},
url = {https://arxiv.org/abs/2407.01574},
}

@article{Fan2024,
title = {CryoTRANS: predicting high-resolution maps of rare conformations from self-supervised trajectories in cryo-EM},
author = {Fan, Xiao and Zhang, Qi and Zhang, Hui and Zhu, Jianying and Ju, Lili and Shi, Zuoqiang and Hu, Mingxu and Bao, Chenglong},
journal = {Communications Biology},
volume = {7},
year = {2024},
doi = {https://doi.org/10.1038/s42003-024-06739-9},
}

@article{Matsumoto2021,
title = {Extraction of protein dynamics information from cryo-EM maps using deep learning},
author = {Matsumoto, Shigeyuki and Ishida, Shoichi and Araki, Mitsugu and Kato, Takayuki and Terayama, Kei and Okuno, Yasushi},
journal = {Nature Machine Intelligence},
volume = {3},
number = {2},
pages = {153--160},
year = {2021},
doi = {https://doi.org/10.1038/s42256-020-00290-y},
}

@article{Bakan2011,
title = {ProDy: Protein Dynamics Inferred from Theory and Experiments},
author = {Bakan, Ahmet and Meireles, Lidio M. and Bahar, Ivet},
journal = {Bioinformatics},
volume = {27},
number = {11},
pages = {1575--1577},
year = {2011},
doi = {https://doi.org/10.1093/bioinformatics/btr168},
}

@article{Tama2000,
title = {Building-block approach for determining low-frequency normal modes of macromolecules},
author = {Tama, Florence and Gadea, Florent Xavier and Marques, Osni and Sanejouand, Yves-Henri},
journal = {Proteins: Structure, Function, and Genetics},
volume = {41},
number = {1},
pages = {1--7},
year = {2000},
doi = {https://doi.org/10.1002/1097-0134(20001001)41:1<1::AID-PROT10>3.0.CO;2-P},
}

@article{Zhong2021,
title = {CryoDRGN: reconstruction of heterogeneous cryo-EM structures using neural networks},
author = {Zhong, Ellen D. and Bepler, Tristan and Berger, Bonnie and Davis, Joseph H.},
journal = {Nature Methods},
volume = {18},
number = {2},
pages = {176--185},
year = {2021},
doi = {https://doi.org/10.1038/s41592-020-01049-4},
}

@article{Scheres2012,
title = {RELION: Implementation of a Bayesian approach to cryo-EM structure determination},
author = {Scheres, Sjors H. W.},
journal = {Journal of Structural Biology},
volume = {180},
number = {3},
pages = {519--530},
year = {2012},
doi = {https://doi.org/10.1016/j.jsb.2012.09.006},
}
"""
