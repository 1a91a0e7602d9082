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
    python_requires=">=3.8",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks"]),
    package_data={"cryoflex_scipion": ["protocols.conf", "data/*", "*.png"]},
    include_package_data=False,
    install_requires=[
        "scipion-pyworkflow>=3.11",
        "scipion-em>=3.11",
        "torch",
        "numpy",
        "prody",
        "mrcfile",
        "matplotlib",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={"pyworkflow.plugin": ["cryoflex_scipion = cryoflex_scipion"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
)
