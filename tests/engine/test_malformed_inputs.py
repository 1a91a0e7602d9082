"""The malformed-input catalogue: every engine command, fed each bad input a user can give it, stops before
any heavy work with exit status 2 and one line on stderr that names the problem (no traceback, no warning
noise), and leaves no output that looks complete.

Cases run in-process through the engine's entry point, on a tiny simulated particle set (8 particles,
32 px), its reference map, Calpha atoms of AdK and their 10 ANM modes.  Each case names the text its
message must contain, so a message that says something else ("the header has no pixel size" for a
negative --apix) fails.
"""
import os
import shutil

import numpy as np
import pytest

import cryoflex_scipion
from cryoflex_scipion.engine.__main__ import main
from cryoflex_scipion.engine.core.io.mrc import read_map, write_map
from cryoflex_scipion.engine.core.io.star import read_star, write_star

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")
OUT = "OUT"  # the case's own output path, made unique per case


def _run(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _particles_variant(src, dst, edit):
    """A copy of the STAR ``src`` (image paths made absolute) changed by ``edit(optics, particles)``."""
    blocks = read_star(src)
    optics = blocks.get("optics")
    parts = blocks["particles"]
    folder = os.path.dirname(src)
    names = parts.strings("rlnImageName")
    parts.set("rlnImageName", np.array(["%s@%s" % (n.split("@")[0], os.path.join(folder, n.split("@")[1]))
                                        for n in names]))
    edit(optics, parts)
    write_star(dst, [b for b in (optics, parts) if b is not None])
    return dst


def _set_column(block, column, values):
    block.set(column, np.array([str(v) for v in np.broadcast_to(values, (len(block),))]))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("malformed")
    p = {"root": str(root), "model": MODEL}
    sim = str(root / "sim")
    assert _run(["simulate", "--model", MODEL, "--selection", "name CA", "-o", sim, "-n", "8", "--box", "32",
                 "--apix", "3", "--snr", "1", "--batch-size", "8"]) == 0
    p["star"] = os.path.join(sim, "particles.star")
    p["stack"] = os.path.join(sim, "particles.mrcs")
    p["map"] = os.path.join(sim, "reference.mrc")
    p["atoms"] = str(root / "ca.npz")
    assert _run(["atoms", MODEL, "-o", p["atoms"], "--selection", "name CA"]) == 0
    assert _run(["nma", "--atoms", p["atoms"], "-o", str(root / "nma"), "-n", "10", "--model", "ANM",
                 "--animation-frames", "2"]) == 0
    p["modes"] = str(root / "nma" / "modes.npy")
    modes = np.load(p["modes"])
    bad = modes.copy()
    bad[7, 3, 1] = np.nan
    np.save(str(root / "modes_nan.npy"), bad)
    p["modes_nan"] = str(root / "modes_nan.npy")
    np.save(str(root / "modes_short.npy"), modes[:, :100])
    p["modes_short"] = str(root / "modes_short.npy")

    def star(name, edit):
        p[name] = _particles_variant(p["star"], str(root / (name + ".star")), edit)

    star("star_apix0", lambda o, b: _set_column(o, "rlnImagePixelSize", 0.0))
    star("star_nan_angle", lambda o, b: b.values["rlnAngleTilt"].__setitem__(2, "nan"))
    star("star_all_nan", lambda o, b: _set_column(b, "rlnAngleRot", "nan"))
    star("star_inf_origin", lambda o, b: b.values["rlnOriginXAngst"].__setitem__(0, "inf"))
    star("star_nan_defocus", lambda o, b: b.values["rlnDefocusU"].__setitem__(1, "nan"))
    star("star_voltage0", lambda o, b: _set_column(o, "rlnVoltage", 0.0))
    star("star_q0_big", lambda o, b: _set_column(o, "rlnAmplitudeContrast", 1.5))
    star("star_no_q0", lambda o, b: o.remove("rlnAmplitudeContrast"))
    star("star_box40", lambda o, b: _set_column(o, "rlnImageSize", 40))
    star("star_no_angles", lambda o, b: [b.remove(c) for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")])
    star("star_empty", lambda o, b: [b.values.__setitem__(c, b.values[c][:0]) for c in b.columns])
    star("star_one", lambda o, b: [b.values.__setitem__(c, b.values[c][:1]) for c in b.columns])
    star("star_text_angle", lambda o, b: b.values["rlnAngleRot"].__setitem__(0, "abc"))

    def past_end(o, b):
        names = b.strings("rlnImageName")
        names[3] = "000099@" + names[3].split("@")[1]
        b.set("rlnImageName", names)
    star("star_past_end", past_end)

    def other_stack(name, stack_path):
        def edit(o, b):
            b.set("rlnImageName", np.array(["%s@%s" % (n.split("@")[0], stack_path)
                                            for n in b.strings("rlnImageName")]))
        star(name, edit)

    truncated = str(root / "truncated.mrcs")
    with open(p["stack"], "rb") as fh:
        data = fh.read()
    with open(truncated, "wb") as fh:
        fh.write(data[:1024 + 32 * 32 * 4 * 5 + 100])
    other_stack("star_truncated", truncated)
    garbage_stack = str(root / "garbage.mrcs")
    with open(garbage_stack, "w") as fh:
        fh.write("this is not an MRC file\n" * 100)
    other_stack("star_garbage_stack", garbage_stack)
    complex_stack = str(root / "complex.mrcs")
    _write_complex_stack(p["stack"], complex_stack)
    other_stack("star_complex", complex_stack)
    big_stack = str(root / "big.mrcs")
    write_map(big_stack, np.zeros((8, 40, 40), np.float32), 3.0, is_stack=True)
    other_stack("star_stack40", big_stack)

    ref, info = read_map(p["map"])
    for name, volume, apix in (("map_nan", np.where(ref > ref.max() / 2, np.nan, ref), 3.0),
                               ("map_zero", np.zeros_like(ref), 3.0), ("map_voxel0", ref, 0.0),
                               ("map_flat", ref[:, :, :30], 3.0), ("map_box40", np.pad(ref, 4), 3.0)):
        p[name] = str(root / (name + ".mrc"))
        write_map(p[name], np.ascontiguousarray(volume, dtype=np.float32), apix)
    p["complex_map"] = str(root / "complex.mrc")
    _write_complex_stack(p["map"], p["complex_map"], volume=True)
    p["garbage"] = str(root / "garbage.mrc")
    with open(p["garbage"], "w") as fh:
        fh.write("not a map\n")
    p["garbage_pdb"] = str(root / "garbage.pdb")
    with open(p["garbage_pdb"], "w") as fh:
        fh.write("HELLO WORLD\nnot a model\n")
    p["text"] = str(root / "notes.txt")
    with open(p["text"], "w") as fh:
        fh.write("notes\n")
    p["existing"] = str(root / "existing_file")
    with open(p["existing"], "w") as fh:
        fh.write("keep me\n")
    p["missing"] = str(root / "missing.file")
    rng = np.random.default_rng(0)
    np.save(str(root / "features.npy"), rng.normal(size=(8, 3)))
    p["features"] = str(root / "features.npy")
    features = rng.normal(size=(8, 3))
    features[4, 1] = np.nan
    np.save(str(root / "features_nan.npy"), features)
    p["features_nan"] = str(root / "features_nan.npy")
    np.save(str(root / "features_1d.npy"), rng.normal(size=8))
    p["features_1d"] = str(root / "features_1d.npy")
    np.save(str(root / "features_20.npy"), rng.normal(size=(20, 3)))
    p["features_20"] = str(root / "features_20.npy")
    np.save(str(root / "labels.npy"), rng.normal(size=(8, 3)))
    p["labels_npy"] = str(root / "labels.npy")
    np.savez(str(root / "labels_wrong.npz"), amplitudes=rng.normal(size=(5, 3)), euler=np.zeros((5, 3)),
             origin_A=np.zeros((5, 2)))
    p["labels_wrong"] = str(root / "labels_wrong.npz")
    np.savez(str(root / "labels.npz"), amplitudes=rng.normal(size=(8, 3)), euler=rng.uniform(0, 90, (8, 3)),
             origin_A=np.zeros((8, 2)), mode_numbers=np.array([7, 8, 9]))
    p["labels"] = str(root / "labels.npz")
    p["trajectory"] = str(root / "trajectory.npz")
    shutil.copy(os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "adk_dims_subset.npz"),
                p["trajectory"])
    p["frame0"] = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "adk_dims_frame000_heavy.npz")
    return p


def _write_complex_stack(src, dst, volume=False):
    """A copy of ``src`` as MRC mode 4 (complex64): a file a user can have from an FFT, not images."""
    import mrcfile
    data, _ = read_map(src) if volume else (None, None)
    if data is None:
        with mrcfile.open(src, permissive=True) as m:
            data = np.array(m.data)
    with mrcfile.new(dst, overwrite=True) as m:
        m.set_data(data.astype(np.complex64))
        m.voxel_size = 3.0
        if not volume:
            m.set_image_stack()


# (id, command line with {names} of the fixture's inputs and {OUT}, text the message must contain)
CASES = [
    # ---- simulate
    ("simulate-missing-model", "simulate --model {missing} -o {OUT}", "missing.file"),
    ("simulate-garbage-model", "simulate --model {garbage_pdb} -o {OUT}", "garbage.pdb"),
    ("simulate-box-0", "simulate --model {model} -o {OUT} --box 0", "--box"),
    ("simulate-box-negative", "simulate --model {model} -o {OUT} --box -5", "--box"),
    ("simulate-n-0", "simulate --model {model} -o {OUT} -n 0", "--n-particles"),
    ("simulate-apix-0", "simulate --model {model} -o {OUT} --apix 0", "--apix"),
    ("simulate-apix-negative", "simulate --model {model} -o {OUT} --apix -1.5", "--apix"),
    ("simulate-snr-0", "simulate --model {model} -o {OUT} --snr 0", "--snr"),
    ("simulate-snr-nan", "simulate --model {model} -o {OUT} --snr nan", "--snr"),
    ("simulate-defocus-reversed", "simulate --model {model} -o {OUT} --defocus-min 9 --defocus-max 1", "defocus"),
    ("simulate-voltage-0", "simulate --model {model} -o {OUT} --voltage 0", "--voltage"),
    ("simulate-q0-above-1", "simulate --model {model} -o {OUT} --amplitude-contrast 1.5", "--amplitude-contrast"),
    ("simulate-noise-split", "simulate --model {model} -o {OUT} --noise-before-ctf 2", "--noise-before-ctf"),
    ("simulate-shift-negative", "simulate --model {model} -o {OUT} --max-shift -1", "--max-shift"),
    ("simulate-sigma-0", "simulate --model {model} -o {OUT} --sigma 0", "--sigma"),
    ("simulate-batch-0", "simulate --model {model} -o {OUT} --batch-size 0", "--batch-size"),
    ("simulate-batch-negative", "simulate --model {model} -o {OUT} --batch-size -3", "--batch-size"),
    ("simulate-out-is-file", "simulate --model {model} -o {existing}", "existing_file"),
    ("simulate-modes-missing", "simulate --model {atoms} --selection all -o {OUT} --modes {missing} "
     "--amplitude-std 1", "missing.file"),
    ("simulate-modes-nan", "simulate --model {atoms} --selection all -o {OUT} --modes {modes_nan} "
     "--amplitude-std 1", "NaN"),
    ("simulate-modes-wrong-atoms", "simulate --model {atoms} --selection all -o {OUT} --modes {modes_short} "
     "--amplitude-std 1",
     "atoms"),
    ("simulate-mode-list-beyond", "simulate --model {atoms} --selection all -o {OUT} --modes {modes} "
     "--mode-list 7-99 --amplitude-std 1", "7-99"),
    ("simulate-mode-list-text", "simulate --model {atoms} --selection all -o {OUT} --modes {modes} "
     "--mode-list abc --amplitude-std 1", "--mode-list 'abc'"),
    ("simulate-mode-list-reversed", "simulate --model {atoms} --selection all -o {OUT} --modes {modes} "
     "--mode-list 9-7 --amplitude-std 1", "reversed"),
    ("simulate-mode-list-without-modes", "simulate --model {atoms} --selection all -o {OUT} --mode-list 7-9",
     "--modes"),
    ("simulate-amplitude-std-negative", "simulate --model {atoms} --selection all -o {OUT} --modes {modes} "
     "--mode-list 7-9 --amplitude-std -1", "--amplitude-std"),
    ("simulate-frames-missing", "simulate --model {atoms} --selection all -o {OUT} --frames {missing}",
     "missing.file"),
    ("simulate-frames-wrong-atoms", "simulate --model {atoms} --selection all -o {OUT} --frames {trajectory}",
     "atoms"),
    ("simulate-unknown-option", "simulate --model {model} -o {OUT} --boxx 3", "--boxx"),
    ("simulate-not-a-number", "simulate --model {model} -o {OUT} --box ten", "--box"),
    # ---- reconstruct
    ("reconstruct-missing-particles", "reconstruct --particles {missing} -o {OUT}", "missing.file"),
    ("reconstruct-text-particles", "reconstruct --particles {text} -o {OUT}", "notes.txt"),
    ("reconstruct-apix-negative", "reconstruct --particles {star} -o {OUT} --apix -3", "--apix"),
    ("reconstruct-apix-0", "reconstruct --particles {star} -o {OUT} --apix 0", "--apix"),
    ("reconstruct-star-apix-0", "reconstruct --particles {star_apix0} -o {OUT}", "pixel size"),
    ("reconstruct-nan-angle", "reconstruct --particles {star_nan_angle} -o {OUT}", "NaN"),
    ("reconstruct-all-nan-angles", "reconstruct --particles {star_all_nan} -o {OUT}", "NaN"),
    ("reconstruct-inf-origin", "reconstruct --particles {star_inf_origin} -o {OUT}", "infinite"),
    ("reconstruct-nan-defocus", "reconstruct --particles {star_nan_defocus} -o {OUT}", "defocus"),
    ("reconstruct-voltage-0", "reconstruct --particles {star_voltage0} -o {OUT}", "voltage"),
    ("reconstruct-q0-above-1", "reconstruct --particles {star_q0_big} -o {OUT}", "amplitude contrast"),
    ("reconstruct-star-without-q0", "reconstruct --particles {star_no_q0} -o {OUT}", "--amplitude-contrast"),
    ("reconstruct-q0-option-above-1", "reconstruct --particles {star_no_q0} -o {OUT} --amplitude-contrast 1",
     "--amplitude-contrast"),
    ("hemnma-star-without-q0", "hemnma --particles {star_no_q0} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9", "--amplitude-contrast"),
    ("reconstruct-text-in-angle", "reconstruct --particles {star_text_angle} -o {OUT}", "rlnAngleRot"),
    ("reconstruct-no-angles", "reconstruct --particles {star_no_angles} -o {OUT}", "no angles"),
    ("reconstruct-empty-star", "reconstruct --particles {star_empty} -o {OUT}", "particles"),
    ("reconstruct-one-particle", "reconstruct --particles {star_one} -o {OUT}", "two particles"),
    ("reconstruct-truncated-stack", "reconstruct --particles {star_truncated} -o {OUT}", "truncated.mrcs"),
    ("reconstruct-garbage-stack", "reconstruct --particles {star_garbage_stack} -o {OUT}", "garbage.mrcs"),
    ("reconstruct-complex-stack", "reconstruct --particles {star_complex} -o {OUT}", "complex"),
    ("reconstruct-index-past-end", "reconstruct --particles {star_past_end} -o {OUT}", "99"),
    ("reconstruct-box-mismatch-star", "reconstruct --particles {star_box40} -o {OUT}", "40"),
    ("reconstruct-box-mismatch-stack", "reconstruct --particles {star_stack40} -o {OUT}", "40"),
    ("reconstruct-size-0", "reconstruct --particles {star} -o {OUT} --size 0", "--size"),
    ("reconstruct-size-above-box", "reconstruct --particles {star} -o {OUT} --size 64", "--size"),
    ("reconstruct-batch-0", "reconstruct --particles {star} -o {OUT} --batch-size 0", "--batch-size"),
    ("reconstruct-batch-negative", "reconstruct --particles {star} -o {OUT} --batch-size -4", "--batch-size"),
    ("reconstruct-pad-below-1", "reconstruct --particles {star} -o {OUT} --pad 0.5", "--pad"),
    ("reconstruct-wiener-text", "reconstruct --particles {star} -o {OUT} --wiener abc", "--wiener"),
    ("reconstruct-wiener-negative", "reconstruct --particles {star} -o {OUT} --wiener -1", "--wiener"),
    ("reconstruct-reference-missing", "reconstruct --particles {star} -o {OUT} --reference {missing}",
     "missing.file"),
    ("reconstruct-reference-garbage", "reconstruct --particles {star} -o {OUT} --reference {garbage}",
     "garbage.mrc"),
    ("reconstruct-reference-box", "reconstruct --particles {star} -o {OUT} --reference {map_box40}", "40"),
    ("reconstruct-origin-two-numbers", "reconstruct --particles {star} -o {OUT} --origin 1,2", "--origin"),
    ("reconstruct-out-is-file", "reconstruct --particles {star} -o {existing}", "existing_file"),
    ("reconstruct-ctf-mode-unknown", "reconstruct --particles {star} -o {OUT} --ctf-mode wiener", "--ctf-mode"),
    # ---- atoms
    ("atoms-missing-model", "atoms {missing} -o {OUT}.npz", "missing.file"),
    ("atoms-garbage-model", "atoms {garbage_pdb} -o {OUT}.npz", "garbage.pdb"),
    ("atoms-empty-selection", ["atoms", "{model}", "-o", "{OUT}.npz", "--selection", "name XYZ"], "selection"),
    ("atoms-bad-selection", ["atoms", "{model}", "-o", "{OUT}.npz", "--selection", "resid < <"], "selection"),
    ("atoms-out-is-folder", "atoms {model} -o {root}", "folder"),
    # ---- nma
    ("nma-missing-atoms", "nma --atoms {missing} -o {OUT}", "missing.file"),
    ("nma-garbage-atoms", "nma --atoms {garbage_pdb} -o {OUT}", "garbage.pdb"),
    ("nma-modes-0", "nma --atoms {atoms} -o {OUT} -n 0", "--n-modes"),
    ("nma-cutoff-0", "nma --atoms {atoms} -o {OUT} --cutoff 0", "--cutoff"),
    ("nma-cutoff-negative", "nma --atoms {atoms} -o {OUT} --cutoff -1", "--cutoff"),
    ("nma-cutoff-nan", "nma --atoms {atoms} -o {OUT} --cutoff nan", "--cutoff"),
    ("nma-gamma-0", "nma --atoms {atoms} -o {OUT} --gamma 0", "--gamma"),
    ("nma-block-size-0", "nma --atoms {atoms} -o {OUT} --model RTB --block-size 0", "--block-size"),
    ("nma-percentile-above-100", "nma --atoms {atoms} -o {OUT} --cutoff-percentile 150", "--cutoff-percentile"),
    ("nma-collectivity-above-1", "nma --atoms {atoms} -o {OUT} --collectivity-threshold 2",
     "--collectivity-threshold"),
    ("nma-animation-frames-0", "nma --atoms {atoms} -o {OUT} --animation-frames 0", "--animation-frames"),
    ("nma-model-unknown", "nma --atoms {atoms} -o {OUT} --model XYZ", "--model"),
    ("nma-out-is-file", "nma --atoms {atoms} -o {existing}", "existing_file"),
    ("nma-empty-selection", ["nma", "--atoms", "{model}", "-o", "{OUT}", "--selection", "name XYZ"], "selection"),
    # ---- pseudoatoms
    ("pseudoatoms-missing-map", "pseudoatoms --map {missing} -o {OUT}", "missing.file"),
    ("pseudoatoms-garbage-map", "pseudoatoms --map {garbage} -o {OUT}", "garbage.mrc"),
    ("pseudoatoms-voxel-0", "pseudoatoms --map {map_voxel0} -o {OUT}", "--apix"),
    ("pseudoatoms-apix-negative", "pseudoatoms --map {map} -o {OUT} --apix -1", "--apix"),
    ("pseudoatoms-zero-map", "pseudoatoms --map {map_zero} -o {OUT}", "map_zero.mrc"),
    ("pseudoatoms-nan-map", "pseudoatoms --map {map_nan} -o {OUT}", "NaN"),
    ("pseudoatoms-complex-map", "pseudoatoms --map {complex_map} -o {OUT}", "complex"),
    ("pseudoatoms-n-atoms-0", "pseudoatoms --map {map} -o {OUT} --n-atoms 0", "--n-atoms"),
    ("pseudoatoms-threshold-above-max", "pseudoatoms --map {map} -o {OUT} --threshold 1e9", "threshold 1e+09"),
    ("pseudoatoms-refine-steps-negative", "pseudoatoms --map {map} -o {OUT} --refine-steps -1", "--refine-steps"),
    ("pseudoatoms-sigma-0", "pseudoatoms --map {map} -o {OUT} --sigma 0", "--sigma"),
    ("pseudoatoms-resolution-negative", "pseudoatoms --map {map} -o {OUT} --resolution -4", "--resolution"),
    ("pseudoatoms-out-is-file", "pseudoatoms --map {map} -o {existing}", "existing_file"),
    # ---- hemnma
    ("hemnma-missing-particles", "hemnma --particles {missing} --atoms {atoms} --modes {modes} -o {OUT}",
     "missing.file"),
    ("hemnma-missing-modes", "hemnma --particles {star} --atoms {atoms} --modes {missing} -o {OUT}", "missing.file"),
    ("hemnma-mode-list-reversed", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 9-7", "reversed"),
    ("hemnma-mode-list-text", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list abc", "--mode-list 'abc'"),
    ("hemnma-mode-list-rigid", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 1-6", "rigid"),
    ("hemnma-mode-list-beyond", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-99", "7-99"),
    ("hemnma-modes-nan", "hemnma --particles {star} --atoms {atoms} --modes {modes_nan} -o {OUT} --mode-list 7-9",
     "NaN"),
    ("hemnma-modes-wrong-atoms", "hemnma --particles {star} --atoms {atoms} --modes {modes_short} -o {OUT} "
     "--mode-list 7-9", "atoms"),
    ("hemnma-batch-0", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} --mode-list 7-9 "
     "--batch-size 0", "--batch-size"),
    ("hemnma-size-0", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} --mode-list 7-9 "
     "--size 0", "--size"),
    ("hemnma-angular-step-0", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --angular-step 0", "--angular-step"),
    ("hemnma-max-shift-negative", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --max-shift -1", "--max-shift"),
    ("hemnma-starts-0", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} --mode-list 7-9 "
     "--starts 0", "--starts"),
    ("hemnma-search-levels-0", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --search-levels 0", "--search-levels"),
    ("hemnma-sigma-0", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} --mode-list 7-9 "
     "--sigma 0", "--sigma"),
    ("hemnma-apix-negative", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --apix -1", "--apix"),
    ("hemnma-star-apix-0", "hemnma --particles {star_apix0} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9", "pixel size"),
    ("hemnma-input-poses-nan", "hemnma --particles {star_nan_angle} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --use-input-poses", "NaN"),
    ("hemnma-truncated-stack", "hemnma --particles {star_truncated} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9", "truncated.mrcs"),
    ("hemnma-complex-stack", "hemnma --particles {star_complex} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9", "complex"),
    ("hemnma-gpus-absent", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} --mode-list 7-9 "
     "--gpus 7", "GPU"),
    ("hemnma-out-is-file", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {existing} "
     "--mode-list 7-9", "existing_file"),
    ("hemnma-outlier-threshold-0", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --outlier-threshold 0", "--outlier-threshold"),
    ("hemnma-other-reference-missing", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --other-references {missing}", "missing.file"),
    ("hemnma-other-reference-other-atoms", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --other-references {text}", "other reference"),
    ("hemnma-intermediates-negative", "hemnma --particles {star} --atoms {atoms} --modes {modes} -o {OUT} "
     "--mode-list 7-9 --other-references {atoms} --intermediates -1", "--intermediates"),
    # ---- landscape
    ("landscape-missing-features", "landscape --features {missing} -o {OUT}", "missing.file"),
    ("landscape-text-features", "landscape --features {text} -o {OUT}", "notes.txt"),
    ("landscape-nan-features", "landscape --features {features_nan} -o {OUT}", "NaN"),
    ("landscape-1d-features", "landscape --features {features_1d} -o {OUT}", "features_1d.npy"),
    ("landscape-dims-0", "landscape --features {features} -o {OUT} --dims 0", "--dims"),
    ("landscape-k-0", "landscape --features {features} -o {OUT} --k 0", "--k"),
    ("landscape-k-above-particles", "landscape --features {features} -o {OUT} --k 50", "50 groups"),
    ("landscape-core-fraction", "landscape --features {features} -o {OUT} --core-fraction 1.5", "--core-fraction"),
    ("landscape-method-unknown", "landscape --features {features} -o {OUT} --method tsne3", "--method"),
    ("landscape-particles-mismatch", "landscape --features {features_20} -o {OUT} --particles {star}", "8"),
    ("landscape-out-is-file", "landscape --features {features} -o {existing}", "existing_file"),
    # ---- defmap
    ("defmap-predict-missing-map", "defmap predict --map {missing} -o {OUT}", "missing.file"),
    ("defmap-predict-apix-negative", "defmap predict --map {map} -o {OUT} --apix -1", "--apix must be positive"),
    ("defmap-predict-voxel-0", "defmap predict --map {map_voxel0} -o {OUT}", "--apix"),
    ("defmap-predict-nan-map", "defmap predict --map {map_nan} -o {OUT}", "NaN"),
    ("defmap-predict-model-missing", "defmap predict --map {map} -o {OUT} --model {missing}", "missing.file"),
    ("defmap-predict-model-garbage", "defmap predict --map {map} -o {OUT} --model {text}", "notes.txt"),
    ("defmap-predict-resolution-negative", "defmap predict --map {map} -o {OUT} --resolution -5", "--resolution"),
    ("defmap-predict-atoms-missing", "defmap predict --map {map} -o {OUT} --atoms {missing}", "missing.file"),
    ("defmap-predict-batch-0", "defmap predict --map {map} -o {OUT} --batch-size 0", "--batch-size"),
    ("defmap-predict-out-is-file", "defmap predict --map {map} -o {existing}", "existing_file"),
    ("defmap-train-missing-pair", "defmap train --pair {missing} {model} --resolution 5 -o {OUT}", "missing.file"),
    ("defmap-train-resolution-0", "defmap train --pair {map} {model} --resolution 0 -o {OUT}", "--resolution"),
    ("defmap-train-epochs-0", "defmap train --pair {map} {model} --resolution 5 -o {OUT} --epochs 0", "--epochs"),
    ("defmap-train-val-fraction", "defmap train --pair {map} {model} --resolution 5 -o {OUT} --val-fraction 1.5",
     "--val-fraction"),
    ("defmap-train-lr-negative", "defmap train --pair {map} {model} --resolution 5 -o {OUT} --lr -1", "--lr"),
    ("defmap-train-batch-0", "defmap train --pair {map} {model} --resolution 5 -o {OUT} --batch-size 0",
     "--batch-size"),
    ("defmap-simulate-resolution-0", "defmap simulate-training-map --atoms {model} --resolution 0 -o {OUT}.mrc",
     "--resolution"),
    ("defmap-simulate-apix-0", "defmap simulate-training-map --atoms {model} --apix 0 -o {OUT}.mrc", "--apix"),
    ("defmap-simulate-noise-negative", "defmap simulate-training-map --atoms {model} --noise -1 -o {OUT}.mrc",
     "--noise"),
    ("defmap-simulate-missing-atoms", "defmap simulate-training-map --atoms {missing} -o {OUT}.mrc",
     "missing.file"),
    # ---- modelmap
    ("modelmap-missing-model", "modelmap {missing} -o {OUT}.mrc --size 32 --apix 2", "missing.file"),
    ("modelmap-like-missing", "modelmap {model} -o {OUT}.mrc --like {missing}", "missing.file"),
    ("modelmap-like-voxel-0", "modelmap {model} -o {OUT}.mrc --like {map_voxel0}", "voxel size"),
    ("modelmap-size-0", "modelmap {model} -o {OUT}.mrc --size 0 --apix 2", "--size"),
    ("modelmap-apix-0", "modelmap {model} -o {OUT}.mrc --size 32 --apix 0", "--apix"),
    ("modelmap-resolution-negative", "modelmap {model} -o {OUT}.mrc --size 32 --apix 2 --resolution -1",
     "--resolution"),
    ("modelmap-sigma-0", "modelmap {model} -o {OUT}.mrc --size 32 --apix 2 --sigma 0", "--sigma"),
    ("modelmap-origin-text", "modelmap {model} -o {OUT}.mrc --size 32 --apix 2 --origin a,b,c", "--origin"),
    ("modelmap-out-is-folder", "modelmap {model} -o {root} --size 32 --apix 2", "folder"),
    # ---- cryotrans
    ("cryotrans-train-missing-map", "cryotrans train --map0 {missing} --map1 {map} -o {OUT}", "missing.file"),
    ("cryotrans-train-iterations-negative", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --iterations -5",
     "--iterations"),
    ("cryotrans-train-iterations-0", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --iterations 0",
     "--iterations"),
    ("cryotrans-train-steps-0", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --steps 0", "--steps"),
    ("cryotrans-train-lr-0", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --lr 0", "--lr"),
    ("cryotrans-train-eps-0", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --eps 0", "--eps"),
    ("cryotrans-train-width-0", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --width 0", "--width"),
    ("cryotrans-train-depth-0", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --depth 0", "--depth"),
    ("cryotrans-train-rigidity-negative", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --rigidity -1",
     "--rigidity"),
    ("cryotrans-train-sinkhorn-0", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --sinkhorn-iters 0",
     "--sinkhorn-iters"),
    ("cryotrans-train-box-mismatch", "cryotrans train --map0 {map} --map1 {map_box40} -o {OUT}", "--resample"),
    ("cryotrans-train-nan-map", "cryotrans train --map0 {map_nan} --map1 {map} -o {OUT}", "NaN"),
    ("cryotrans-train-zero-map", "cryotrans train --map0 {map} --map1 {map_zero} -o {OUT}", "map_zero.mrc"),
    ("cryotrans-train-threshold-above-max", "cryotrans train --map0 {map} --map1 {map} -o {OUT} "
     "--threshold0 1e9", "threshold 1e+09"),
    ("cryotrans-train-mask-missing", "cryotrans train --map0 {map} --map1 {map} -o {OUT} --masks {missing}",
     "missing.file"),
    ("cryotrans-train-out-is-file", "cryotrans train --map0 {map} --map1 {map} -o {existing}", "existing_file"),
    ("cryotrans-predict-missing-model", "cryotrans predict --model {missing} --map0 {map} -o {OUT}",
     "missing.file"),
    ("cryotrans-predict-garbage-model", "cryotrans predict --model {text} --map0 {map} -o {OUT}", "notes.txt"),
    # ---- deephemnma
    ("deephemnma-train-labels-npy", "deephemnma train --particles {star} --labels-npz {labels_npy} -o {OUT}",
     "labels.npy"),
    ("deephemnma-train-labels-missing", "deephemnma train --particles {star} --labels-npz {missing} -o {OUT}",
     "missing.file"),
    ("deephemnma-train-labels-count", "deephemnma train --particles {star} --labels-npz {labels_wrong} -o {OUT}",
     "labels for 5 particles"),
    ("deephemnma-train-missing-particles", "deephemnma train --particles {missing} --labels-npz {labels} "
     "-o {OUT}", "missing.file"),
    ("deephemnma-train-size-0", "deephemnma train --particles {star} --labels-npz {labels} -o {OUT} "
     "--size 0", "--size"),
    ("deephemnma-train-epochs-0", "deephemnma train --particles {star} --labels-npz {labels} -o {OUT} "
     "--epochs 0", "--epochs"),
    ("deephemnma-train-lr-0", "deephemnma train --particles {star} --labels-npz {labels} -o {OUT} --lr 0",
     "--lr"),
    ("deephemnma-train-batch-0", "deephemnma train --particles {star} --labels-npz {labels} -o {OUT} "
     "--batch-size 0", "--batch-size"),
    ("deephemnma-train-val-fraction", "deephemnma train --particles {star} --labels-npz {labels} -o {OUT} "
     "--val-fraction 1", "--val-fraction"),
    ("deephemnma-train-modes-list", "deephemnma train --particles {star} --labels-npz {labels} -o {OUT} "
     "--modes-list 9-7", "reversed"),
    ("deephemnma-train-out-is-file", "deephemnma train --particles {star} --labels-npz {labels} "
     "-o {existing}", "existing_file"),
    ("deephemnma-predict-missing-model", "deephemnma predict --model {missing} --particles {star} -o {OUT}",
     "missing.file"),
    ("deephemnma-predict-garbage-model", "deephemnma predict --model {text} --particles {star} -o {OUT}",
     "notes.txt"),
    # ---- yardstick
    ("yardstick-missing-trajectory", "yardstick build --trajectory {missing} --reference {frame0} -o {OUT}",
     "missing.file"),
    ("yardstick-frames-beyond", "yardstick build --trajectory {trajectory} --reference {frame0} -o {OUT} "
     "--frames 0-40", "frame 5 does not exist"),
    ("yardstick-particles-0", "yardstick build --trajectory {trajectory} --reference {frame0} -o {OUT} "
     "--particles-per-frame 0", "--particles-per-frame"),
    ("yardstick-snr-0", "yardstick build --trajectory {trajectory} --reference {frame0} -o {OUT} --snr 0", "--snr"),
    ("yardstick-box-0", "yardstick build --trajectory {trajectory} --reference {frame0} -o {OUT} --box 0", "--box"),
    ("yardstick-apix-0", "yardstick build --trajectory {trajectory} --reference {frame0} -o {OUT} --apix 0",
     "--apix"),
    ("yardstick-out-is-file", "yardstick build --trajectory {trajectory} --reference {frame0} -o {existing}",
     "existing_file"),
]


def test_catalogue_is_large_and_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_gets_one_line(case, inputs, capsys, one_torch_thread):
    name, command, expected = case
    out = os.path.join(inputs["root"], "out-" + name)
    fields = dict(inputs, OUT=out)
    argv = [part.format(**fields) for part in (command.split() if isinstance(command, str) else command)]
    capsys.readouterr()
    code = _run(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, "exit status %r, stderr:\n%s" % (code, err)
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), err
    assert expected in lines[0], lines[0]
    for path in (out, out + ".npz", out + ".mrc"):
        left = os.listdir(path) if os.path.isdir(path) else [path] if os.path.exists(path) else []
        assert not left, "output left at %s: %s" % (path, left)
    with open(inputs["existing"]) as fh:
        assert fh.read() == "keep me\n"
