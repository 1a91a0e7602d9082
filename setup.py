"""scipion-em-cryoflex: flexibility and continuous heterogeneity in cryo-EM for Scipion 3."""
import os
import re

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
with open(os.path.join(here, "cryoflex_scipion", "__init__.py")) as fh:
    version = re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)
with open(os.path.join(here, "README.md"), encoding="utf-8") as fh:
    long_description = fh.read()

setup(
    name="scipion-em-cryoflex",
    version=version,
    description="CryoFlex: normal modes, HEMNMA, DeepHEMNMA, 3DFlex, cryoSPHERE, CryoTRANS and DEFMap in Scipion",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    # Python 3.11: the version the suite runs on (torch >= 2.11 and ProDy 2.6 need 3.10 at least).
    python_requires=">=3.11",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"]),
    package_data={"cryoflex_scipion": ["protocols.conf", "data/*", "*.png"]},
    include_package_data=False,
    # Minimum versions: those the test suite and the benchmarks ran with.
    install_requires=[
        "scipion-pyworkflow>=3.11.7",
        "scipion-em>=3.11.1",
        "torch>=2.11",        # 2.13.0 CPU (test suite), 2.11.0 CUDA (H200 benchmarks)
        "numpy>=1.26",        # 1.26.1 (pinned by scipion-pyworkflow 3.11.7)
        "scipy>=1.10",        # 1.10.0: sparse Hessians and eigsh (NMA), NNLS, k-d trees
        "prody>=2.6.1",       # atomic models (PDB/mmCIF, selections, DCD)
        "mrcfile>=1.4.3",     # scipion-em 3.11.1 requires mrcfile<=1.4.3
        "matplotlib>=3.8",    # 3.8.1: viewers' figures
    ],
    extras_require={
        # build (+ wheel for setuptools < 70.1, as in a new Python 3.11 venv): tests/test_wheel.py builds the
        # sdist and the wheel
        "test": ["pytest", "build", "wheel"],
        "umap": ["umap-learn"],        # optional UMAP reduction in the landscape protocol
    },
    entry_points={"pyworkflow.plugin": ["cryoflex_scipion = cryoflex_scipion"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
)
