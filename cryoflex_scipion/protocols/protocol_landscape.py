"""Conformational landscape of particles with flexibility coordinates (amplitudes or latents)."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.objects import AtomStruct, SetOfAtomStructs, SetOfClassesFlex, SetOfParticlesFlex, SetOfVolumes, VolumeFlex
from pyworkflow.object import Integer

from ..constants import FLEX_NMA
from ..convert import (atomstruct_to_npz, latent_flex_info, modes_to_array, read_latents, volume_from_mrc,
                       write_particles_star)
from ..engine.landscape import outputs as OUT
from .base import CryoFlexProtocol

GROUPINGS = ["k-means", "Gaussian mixture", "ranges on the axes", "equal-population bins along axis 1", "none"]
GROUPING_ARGS = ["kmeans", "gmm", "ranges", "quantiles", "none"]
CTF_MODES = ["raw images (CTF)", "phase-flipped images", "no CTF"]
CTF_ARGS = ["full", "phase-flipped", "none"]

# Engine inputs this protocol writes (its outputs are named in engine/landscape/outputs.py).
FEATURES_NPY = "features.npy"
PARTICLES_STAR = "particles.star"
MODES_NPY = "modes.npy"
REFERENCE_NPZ = "reference.npz"


class ProtCryoFlexLandscape(CryoFlexProtocol):
    """Conformational landscape of any set of particles with flexibility coordinates (normal-mode
    amplitudes from HEMNMA/DeepHEMNMA, or latent vectors): PCA (or UMAP), groups by k-means, Gaussian
    mixture, ranges on the axes or equal-population bins, a reconstruction of every group from the
    particles' poses and CTF, and for normal modes the group centroid structures and animations
    along the principal axes.
    """
    _label = "conformational landscape"
    _engineCommand = "landscape"
    _possibleOutputs = {"outputParticles": SetOfParticlesFlex, "outputClasses": SetOfClassesFlex,
                        "outputVolumes": SetOfVolumes, "outputStructures": SetOfAtomStructs}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticlesFlex",
                      label="Particles with flexibility",
                      help="Any set of particles with flexibility coordinates (zFlex): normal-mode amplitudes "
                           "(elastic alignment, DeepHEMNMA) or the latent vectors of a method such as 3DFlex or "
                           "cryoSPHERE.")
        form.addParam("inputModes", params.PointerParam, pointerClass="SetOfNormalModes", allowsNull=True,
                      label="Normal modes (optional)",
                      help="For normal-mode amplitudes: the modes (and their reference) used to compute them, for "
                           "centroid structures and animations.")
        form.addSection(label="Landscape")
        form.addParam("method", params.EnumParam, default=0, choices=["PCA", "UMAP"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Dimension reduction",
                      help="UMAP needs the optional package umap-learn.")
        form.addParam("dims", params.IntParam, default=2, validators=[params.Range(1, 10)], label="Dimensions")
        form.addParam("standardise", params.BooleanParam, default=False, expertLevel=params.LEVEL_ADVANCED,
                      label="Standardise coordinates?", help="Scale every coordinate to unit variance before PCA.")
        form.addParam("grouping", params.EnumParam, default=0, choices=GROUPINGS, label="Groups")
        form.addParam("k", params.IntParam, default=10, validators=[params.GE(1)], label="Number of groups",
                      condition="grouping in (0, 1, 3)", help="For equal-population bins: the maximum.")
        form.addParam("ranges", params.TextParam, default="1:-900:-100", condition="grouping == 2",
                      label="Ranges", help="One group per line: axis:min:max conditions separated by commas, "
                                           "e.g. '1:-900:-100' or '1:0:500, 2:-50:50'.")
        form.addParam("minSize", params.IntParam, default=900, validators=[params.GE(1)], condition="grouping == 3",
                      label="Particles per group (at least)")
        form.addParam("coreFraction", params.FloatParam, default=1.0, validators=[params.Range(0.05, 1)],
                      condition="grouping in (0, 1)", label="Core fraction",
                      help="Keep in each group only this fraction of particles closest to its centre (dense cores).")
        form.addSection(label="Reconstructions")
        form.addParam("reconstruct", params.BooleanParam, default=True, label="Reconstruct every group?")
        form.addParam("ctfMode", params.EnumParam, default=0, choices=CTF_MODES, condition="reconstruct",
                      label="Images are")
        form.addParam("reconstructSize", params.IntParam, default=0, validators=[params.GE(0)], condition="reconstruct",
                      label="Reconstruction box (px)", help="Fourier-crop the particles first; 0: full size.")
        self._addBatchParam(form, default=256)
        self._addGpuParams(form)

    def _insertAllSteps(self):
        self._insertFormSteps(self.convertInputStep, self.landscapeStep, self.createOutputStep)

    def _isNma(self):
        return self.inputParticles.get().getFlexInfo().getProgName() == FLEX_NMA

    def convertInputStep(self, *formValues):
        parts = self.inputParticles.get()
        np.save(self._enginePath(FEATURES_NPY), read_latents(parts))  # any method's zFlex, id order
        if self.reconstruct.get():
            write_particles_star(parts, self._enginePath(PARTICLES_STAR), use_ctf=self.ctfMode.get() < 2)
        if self._pointerIsSet(self.inputModes):
            numbers = [int(v) for v in str(parts.getFlexInfo().getAttr("modeNumbers")).split(",")]
            vectors, _ = modes_to_array(self.inputModes.get(), numbers=numbers)
            np.save(self._enginePath(MODES_NPY), vectors)
            atomstruct_to_npz(self.inputModes.get().getPdb(), self._enginePath(REFERENCE_NPZ), "all")

    def landscapeStep(self, *formValues):
        args = ["--features", self._enginePath(FEATURES_NPY), "-o", self._enginePath(),
                "--method", ["pca", "umap"][self.method.get()], "--dims", self.dims.get(),
                "--grouping", GROUPING_ARGS[self.grouping.get()], "--k", self.k.get(),
                "--min-size", self.minSize.get(), "--core-fraction", self.coreFraction.get(),
                "--batch-size", self.batchSize.get()]
        if self.standardise.get():
            args.append("--standardise")
        if self.grouping.get() == 2:
            args += ["--ranges"] + [line.strip() for line in self.ranges.get().splitlines() if line.strip()]
        if self.reconstruct.get():
            args += ["--particles", self._enginePath(PARTICLES_STAR), "--ctf-mode", CTF_ARGS[self.ctfMode.get()]]
            if self.reconstructSize.get():
                args += ["--size", self.reconstructSize.get()]
        if self._pointerIsSet(self.inputModes):
            args += ["--atoms", self._enginePath(REFERENCE_NPZ), "--modes", self._enginePath(MODES_NPY)]
        self.runEngine(args)

    def createOutputStep(self, *formValues):
        parts = self.inputParticles.get()
        prog = parts.getFlexInfo().getProgName()
        result = np.load(self._enginePath(OUT.LANDSCAPE))
        reduced, groups = result["reduced"], result["groups"]
        flex = SetOfParticlesFlex(filename=self._newSetPath("particles_landscape.sqlite"), progName=prog)
        flex.copyInfo(parts)
        for i, particle in enumerate(parts.iterItems(orderBy="id")):
            item = particle.clone()
            item.setZRed([float(v) for v in reduced[i]])
            item._cryoflexGroup = Integer(int(groups[i]) + 1)  # 0: in no group
            flex.append(item)
        outputs = {"outputParticles": flex}

        rows = {}
        if self.readEngineSummary()["n_groups"]:
            table = np.atleast_1d(np.genfromtxt(self._enginePath(OUT.GROUPS), delimiter=",", names=True))
            rows = {int(r["group"]): r for r in table}
        volumes = structures = None
        for g in sorted(rows):
            folder = self._enginePath(OUT.group_folder(g))
            if os.path.exists(os.path.join(folder, OUT.GROUP_MAP)):
                vol = volume_from_mrc(os.path.join(folder, OUT.GROUP_MAP),
                                      half_maps=[os.path.join(folder, h) for h in OUT.GROUP_HALF_MAPS])
                if volumes is None:
                    volumes = self._createSetOfVolumes()
                    volumes.setSamplingRate(vol.getSamplingRate())
                vol.setObjId(g)
                volumes.append(vol)
            if os.path.exists(os.path.join(folder, OUT.GROUP_CENTROID)):
                if structures is None:
                    structures = self._createSetOfPDBs()
                struct = AtomStruct(filename=os.path.join(folder, OUT.GROUP_CENTROID))
                struct.setObjId(g)
                structures.append(struct)
        if volumes is not None:
            outputs["outputVolumes"] = volumes
        if structures is not None:
            outputs["outputStructures"] = structures
        self._defineOutputs(**outputs)

        if rows:
            names = next(iter(rows.values())).dtype.names
            mean_cols = [c for c in names if c.startswith("mean_")]
            centre_cols = [c for c in names if c.startswith("centre_")]
            classes = SetOfClassesFlex(filename=self._newSetPath("classes_flex.sqlite"))
            classes.setImages(flex)

            def update_item(item, _row=None):  # classifyItems passes an (unused) data row
                item.setClassId(int(item._cryoflexGroup.get()))  # 0 is left out of the classes

            def update_class(cls):
                row = rows[cls.getObjId()]
                rep = VolumeFlex(progName=prog)
                map_file = self._enginePath(OUT.group_folder(cls.getObjId()), OUT.GROUP_MAP)
                if os.path.exists(map_file):
                    rep.setLocation(map_file)
                    rep.setSamplingRate(volumes.getSamplingRate())
                rep.setZFlex([float(row[c]) for c in mean_cols])
                rep.setZRed([float(row[c]) for c in centre_cols])
                cls.setRepresentative(rep)

            classes.classifyItems(updateItemCallback=update_item, updateClassCallback=update_class)
            self._defineOutputs(outputClasses=classes)
            outputs["outputClasses"] = classes
        for out in outputs.values():
            self._defineSourceRelation(self.inputParticles, out)

    # -- info -----------------------------------------------------------------------------
    def _validate(self):
        if not self._pointerIsSet(self.inputParticles):
            return ["Select the particles with flexibility coordinates."]
        errors = []
        parts = self.inputParticles.get()
        first = parts.getFirstItem()
        if first is None or len(first.getZFlex()) == 0:
            return ["The particles carry no flexibility coordinates (zFlex)."]
        latent_dim = latent_flex_info(parts)["latDim"]
        if latent_dim is not None and int(latent_dim) != len(first.getZFlex()):
            errors.append("The particles' FlexInfo declares %s latent dimensions (latDim) but they carry %d "
                          "coordinates." % (latent_dim, len(first.getZFlex())))
        n = parts.getSize()
        if self.grouping.get() in (0, 1) and self.k.get() > n:
            errors.append("%d groups asked for but the set has %d particles." % (self.k.get(), n))
        if self.grouping.get() == 3 and self.minSize.get() > n:
            errors.append("Groups of at least %d particles cannot be made from %d." % (self.minSize.get(), n))
        if self.grouping.get() == 2:
            from ..engine.landscape.groups import parse_ranges
            try:
                for line in self.ranges.get().splitlines():
                    if line.strip():
                        parse_ranges(line)
            except ValueError as exc:
                errors.append("Ranges: %s" % exc)
        if self.reconstruct.get():
            errors += self._validateParticles(self.inputParticles, needAlignment=True,
                                              needCtf=self.ctfMode.get() < 2)
        if self._pointerIsSet(self.inputModes):
            info = parts.getFlexInfo()
            if info.getProgName() != FLEX_NMA or not hasattr(info, "modeNumbers"):
                errors.append("Normal modes were given but the particles' coordinates are not normal-mode "
                              "amplitudes (FlexInfo program %r)." % info.getProgName())
            else:
                numbers = [int(v) for v in str(info.getAttr("modeNumbers")).split(",")]
                available = {m.getObjId() for m in self.inputModes.get().iterItems()}
                if not set(numbers) <= available:
                    errors.append("The amplitudes refer to modes %s, not all in the given set." % numbers)
        return errors

    def _summary(self):
        s = self.readEngineSummary()
        if s is None:
            return ["Not run yet."]
        lines = ["%s of %d particles to %d dimensions; %d groups (%s) of sizes %s"
                 % (s["method"].upper(), s["n_particles"], s["dims"], s["n_groups"], s["grouping"],
                    s["group_sizes"])]
        res = [r for r in s.get("resolutions_0.143_A") or [] if r is not None]
        if res:
            lines.append("Group half-map resolutions (FSC 0.143): %s A" % ", ".join("%.1f" % r for r in res))
        return lines
