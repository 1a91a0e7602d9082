"""MRC, STAR and particle tables, with the real RELION/cryoSPARC files in tests/data."""

import os

import numpy as np
import pytest

from cryoflex_scipion.engine.core.io.mrc import MRCError, StackWriter, map_info, open_stack, read_map, write_map
from cryoflex_scipion.engine.core.io.particles import read_particles
from cryoflex_scipion.engine.core.io.stack import ImageSource
from cryoflex_scipion.engine.core.io.star import StarError, read_star, write_star


def test_map_round_trip_with_origin(tmp_path):
    data = np.random.default_rng(0).standard_normal((20, 20, 20)).astype(np.float32)
    path = str(tmp_path / "m.mrc")
    write_map(path, data, 1.37, (-12.5, 3.0, 44.25))
    back, info = read_map(path)
    assert np.array_equal(back, data)
    assert info.apix == pytest.approx(1.37)
    assert info.origin == pytest.approx((-12.5, 3.0, 44.25))


def test_real_map_with_origin_and_non_cubic_box(data_path, tmp_path):
    info = map_info(data_path("toymodel_small_nocenter.mrc"))
    assert info.shape == (30, 30, 30)
    path = str(tmp_path / "box.mrc")
    write_map(path, np.zeros((10, 12, 14), np.float32), 1.0)
    with pytest.raises(MRCError, match="cubic"):
        read_map(path, require_cubic=True)


def test_nan_map_is_rejected(tmp_path):
    path = str(tmp_path / "nan.mrc")
    data = np.zeros((8, 8, 8), np.float32)
    data[1, 2, 3] = np.nan
    write_map(path, data, 1.0)
    with pytest.raises(MRCError, match="NaN"):
        read_map(path)


def test_non_standard_header_reads_permissively(data_path):
    """empiar_10076_7.mrc has no cell size (pixel size 0): images are still readable."""
    handle, info = open_stack(data_path("empiar_10076_7.mrc"))
    try:
        assert info.shape == (7, 320, 320)
        assert info.apix == 0.0
        assert np.isfinite(np.asarray(handle.data[3])).all()
    finally:
        handle.close()


def test_broken_file_gives_clear_error(tmp_path):
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"not an mrc file at all" * 10)
    with pytest.raises(MRCError) as err:
        read_map(str(bad))
    assert "broken.mrc" in str(err.value)
    with pytest.raises(MRCError, match="not found"):
        read_map(str(tmp_path / "missing.mrc"))


def test_truncated_stack_gives_clear_error(data_path, tmp_path):
    raw = open(data_path("relion31.mrcs"), "rb").read()
    cut = tmp_path / "cut.mrcs"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MRCError) as err:
        open_stack(str(cut))
    assert "cut.mrcs" in str(err.value)


def test_star_round_trip_is_exact(data_path, tmp_path):
    blocks = read_star(data_path("relion31.star"))
    assert list(blocks) == ["optics", "particles"]
    path = str(tmp_path / "rt.star")
    write_star(path, blocks)
    again = read_star(path)
    for name in blocks:
        assert blocks[name].columns == again[name].columns
        for c in blocks[name].columns:
            assert np.array_equal(blocks[name].strings(c), again[name].strings(c))


def test_star_errors(tmp_path):
    path = tmp_path / "bad.star"
    path.write_text("data_particles\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n1@a.mrcs 100 200\n")
    with pytest.raises(StarError, match="3 values for 2 columns"):
        read_star(str(path))


def test_relion31_particles(data_path):
    t = read_particles(data_path("relion31.star"))
    assert len(t) == 5 and t.uniform() == (256, 2.806)
    assert t.euler[0] == pytest.approx([-102.30296, 82.318041, 124.706463])
    assert t.origin_A[0] == pytest.approx([0.019324, -0.64686])
    assert t.ctf.defocus_u[1] == pytest.approx(12906.018499)
    assert t.ctf.voltage[0] == 300 and t.ctf.cs[0] == pytest.approx(0.01) and t.ctf.amplitude_contrast[0] == 0.1
    assert t.ctf.defocus_angle[0] == pytest.approx(-160.39)
    with ImageSource(t) as src:
        imgs = src.read([4, 0])
    assert imgs.shape == (2, 256, 256) and np.isfinite(imgs).all()


def test_relion30_and_cryosparc_files_agree(data_path):
    star = read_particles(data_path("empiar_10076_7.star"))
    cs = read_particles(data_path("empiar_10076_7.cs"))
    assert len(star) == len(cs) == 7
    # RELION 3.0 pixel size from detector pixel / magnification: 5 um / 38168 = 1.31 A.
    assert star.apix[0] == pytest.approx(5e4 / 38168)
    assert cs.apix[0] == pytest.approx(5e4 / 38168, abs=1e-6)  # blob/psize_A (float32)
    assert np.allclose(star.ctf.defocus_u, cs.ctf.defocus_u, atol=0.01)
    assert np.allclose(star.ctf.defocus_v, cs.ctf.defocus_v, atol=0.01)
    assert np.allclose(star.ctf.defocus_angle, cs.ctf.defocus_angle, atol=1e-4)  # radians -> degrees
    assert not star.has_pose and not cs.has_pose
    with ImageSource(star) as a, ImageSource(cs) as b:
        assert np.array_equal(a.read(np.arange(7)), b.read(np.arange(7)))  # 1-based vs 0-based indices


def test_table_star_round_trip(data_path, tmp_path):
    t = read_particles(data_path("relion31.star"))
    out = str(tmp_path / "copy.star")
    t.to_star(out)
    u = read_particles(out, check_files=False)
    assert np.array_equal(u.euler, t.euler) and np.array_equal(u.origin_A, t.origin_A)
    assert np.array_equal(u.ctf.defocus_u, t.ctf.defocus_u) and np.array_equal(u.apix, t.apix)
    assert np.array_equal(u.extra["rlnRandomSubset"], t.extra["rlnRandomSubset"])


def test_missing_stack_named(data_path, tmp_path):
    star = tmp_path / "p.star"
    star.write_text(open(data_path("relion31.star")).read().replace("relion31.mrcs", "nowhere.mrcs"))
    with pytest.raises(FileNotFoundError, match="nowhere.mrcs"):
        read_particles(str(star), check_files=True)


def test_stack_writer_streams(tmp_path):
    path = str(tmp_path / "s.mrcs")
    with StackWriter(path, 10, 16, 2.0) as w:
        for start in range(0, 10, 3):
            w.write(np.full((min(3, 10 - start), 16, 16), start, np.float32))
    handle, info = open_stack(path)
    assert info.shape == (10, 16, 16) and info.apix == 2.0
    assert handle.data[9].mean() == 9
    handle.close()


def test_star_without_particles_is_a_clear_error(tmp_path):
    from cryoflex_scipion.engine.core.io.particles import read_particles
    from cryoflex_scipion.engine.core.io.star import StarError
    path = tmp_path / "empty.star"
    path.write_text("data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n_rlnImageSize #3\n1 1.5 64\n\n"
                    "data_particles\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n")
    with pytest.raises(StarError, match="holds no particles"):
        read_particles(str(path))


# -- StackWriter: positioned writes, headers as mrcfile writes them, stacks over 2 GiB -----------------

def _writer_stack(path, data, apix):
    with StackWriter(path, len(data), data.shape[-1], apix) as w:
        for start in range(0, len(data), 3):
            w.write(data[start:start + 3])


def test_stack_writer_header_matches_mrcfile(tmp_path):
    import mrcfile
    data = np.random.default_rng(1).normal(2.0, 3.0, (7, 12, 12)).astype(np.float32)
    ours, ref = str(tmp_path / "ours.mrcs"), str(tmp_path / "ref.mrcs")
    _writer_stack(ours, data, 1.7)
    with mrcfile.new(ref) as m:
        m.set_data(data)
        m.set_image_stack()
        m.voxel_size = 1.7
        m.update_header_stats()
    with mrcfile.open(ours, permissive=False) as a, mrcfile.open(ref) as b:
        assert a.is_image_stack() and a.header.ispg == 0 and a.header.mz == 1
        assert np.array_equal(a.data, data)
        assert a.voxel_size.x == pytest.approx(1.7) and a.voxel_size.z == pytest.approx(1.7)
        for name in a.header.dtype.names:
            x, y = a.header[name], b.header[name]
            if name == "label":  # 'Created by mrcfile.py' + the time
                assert bytes(x[0])[:21] == bytes(y[0])[:21] == b"Created by mrcfile.py"
            elif name in ("dmean", "rms", "dmin", "dmax"):
                assert float(x) == pytest.approx(float(y), rel=1e-5), name
            else:
                assert np.array_equal(np.asarray(x), np.asarray(y)), name
        assert a.extended_header.nbytes == 0
    assert os.path.getsize(ours) == os.path.getsize(ref)


def test_stack_writer_positions_and_checks(tmp_path):
    path = str(tmp_path / "s.mrcs")
    w = StackWriter(path, 6, 8, 1.0)
    assert w.write(np.full((2, 8, 8), 4, np.float32), start=4) == 6       # last batch first
    w.write(np.full((8, 8), 0, np.float32), start=0)                       # one image
    with pytest.raises(ValueError, match="image 4 written twice"):
        w.write(np.zeros((2, 8, 8), np.float32), start=4)
    with pytest.raises(ValueError, match="outside the declared 6"):
        w.write(np.zeros((3, 8, 8), np.float32), start=4)
    with pytest.raises(ValueError, match="shape"):
        w.write(np.zeros((1, 9, 9), np.float32), start=1)
    w.write(np.stack([np.full((8, 8), i, np.float32) for i in (1, 2)]), start=1)
    with pytest.raises(ValueError, match="5 of 6 images written \\(image 3 is missing\\)"):
        w.close()
    assert w.written == 5

    with StackWriter(path, 4, 8, 1.0) as w:  # several writers' batches in any order
        for start in (2, 0, 3, 1):
            w.write(np.full((1, 8, 8), start, np.float32), start=start)
    handle, info = open_stack(path)
    try:
        assert [float(handle.data[i].mean()) for i in range(4)] == [0, 1, 2, 3]
        assert float(handle.header.dmax) == 3 and float(handle.header.dmean) == pytest.approx(1.5)
    finally:
        handle.close()


def test_stack_over_2_gib_sparse(tmp_path):
    """33,000 images of 128 px (2.16 GB, a sparse file): a first and a last batch written at their places,
    read back with mrcfile and with the engine's ImageSource beyond 2 GiB."""
    import mrcfile
    from cryoflex_scipion.engine.core.io.particles import ParticleTable
    n, size = 33000, 128
    path = str(tmp_path / "big.mrcs")
    rng = np.random.default_rng(2)
    first = rng.standard_normal((3, size, size)).astype(np.float32)
    last = rng.standard_normal((5, size, size)).astype(np.float32) + 7
    w = StackWriter(path, n, size, 1.25)
    w.write(last, start=n - 5)
    w.write(first, start=0)
    w.close(allow_unwritten=True)
    assert os.path.getsize(path) == 1024 + n * size * size * 4 > 2 ** 31
    assert os.stat(path).st_blocks * 512 < 50e6  # only the written batches take disk space

    with mrcfile.open(path, header_only=True, permissive=True) as m:
        h = m.header
        assert (int(h.nz), int(h.ny), int(h.nx), int(h.mode), int(h.ispg)) == (n, size, size, 2, 0)
        assert m.voxel_size.x == pytest.approx(1.25)
        assert float(h.dmax) == pytest.approx(float(last.max()))
    if np.lib.NumpyVersion(np.__version__) < "2.0.0":  # mrcfile 1.4.3's memory map overflows int32 on numpy 2
        with mrcfile.mmap(path, mode="r", permissive=True) as m:
            assert m.data.shape == (n, size, size) and m.header.mode == 2 and m.is_image_stack()
            assert m.voxel_size.x == pytest.approx(1.25)
            assert np.array_equal(m.data[n - 5:], last) and np.array_equal(m.data[:3], first)
            assert not m.data[n // 2].any()

    index = np.array([n - 1, 1, n - 4, 2, n // 2])
    table = ParticleTable(np.array([path] * len(index)), index, np.full(len(index), 1.25),
                          np.full(len(index), size))
    with ImageSource(table) as src:
        images = src.read(np.arange(len(index)))
    assert np.array_equal(images[0], last[4]) and np.array_equal(images[2], last[1])
    assert np.array_equal(images[1], first[1]) and np.array_equal(images[3], first[2])
    assert not images[4].any()
    handle, info = open_stack(path)
    try:
        assert info.shape == (n, size, size) and info.apix == pytest.approx(1.25)
        assert np.array_equal(handle.data[n - 1], last[4])
    finally:
        handle.close()


def test_cryodrgn_writers_match_cryodrgn_parsers(data_path, tmp_path):
    """Pose and CTF pickles equal cryoDRGN 4.3.1's parse_pose_star / parse_ctf_star on the same STAR."""
    import pickle

    from cryoflex_scipion.engine.core.ctf import CTFParams
    from cryoflex_scipion.engine.core.io.cryodrgn import (read_cryodrgn_ctf, read_cryodrgn_poses,
                                                          relion_to_cryodrgn_ctf, write_cryodrgn_ctf,
                                                          write_cryodrgn_inputs)
    table = read_particles(data_path("relion31.star"))
    poses, ctf = str(tmp_path / "poses.pkl"), str(tmp_path / "ctf.pkl")
    write_cryodrgn_inputs(table, poses, ctf)
    with open(ctf, "rb") as fh:
        ours = pickle.load(fh)
    with open(data_path("relion31_cryodrgn_ctf.pkl"), "rb") as fh:
        theirs = pickle.load(fh)
    assert ours.dtype == np.float32 and ours.shape == (5, 9)
    assert np.array_equal(ours, theirs)
    rot, trans = read_cryodrgn_poses(poses)
    with open(data_path("relion31_cryodrgn_poses.pkl"), "rb") as fh:
        rot_ref, trans_ref = pickle.load(fh)
    assert rot.dtype == np.float64 and np.allclose(rot, rot_ref, atol=1e-12)
    assert np.allclose(trans, trans_ref, atol=1e-15)
    # a row by hand: D, Apix, dfU, dfV, dfang, kV, Cs, w, phase
    row = relion_to_cryodrgn_ctf(CTFParams(defocus_u=[15000.0], defocus_v=[14000.0], defocus_angle=[30.0],
                                           voltage=200.0, cs=2.0, amplitude_contrast=0.07, phase_shift=90.0),
                                 128, 1.5)
    assert np.array_equal(row, np.array([[128, 1.5, 15000, 14000, 30, 200, 2.0, 0.07, 90]], dtype=np.float32))
    write_cryodrgn_ctf(str(tmp_path / "one.pkl"), CTFParams(defocus_u=np.array([15000.0, 9000.0]),
                                                           defocus_v=np.array([14000.0, 9000.0])), 64, 2.0)
    back, box, apix = read_cryodrgn_ctf(str(tmp_path / "one.pkl"))
    assert np.array_equal(box, [64, 64]) and np.allclose(apix, 2.0) and np.allclose(back.defocus_v, [14000, 9000])
    assert np.allclose(back.voltage, 300.0) and np.allclose(back.amplitude_contrast, 0.1)


def test_relion30_star_without_amplitude_contrast_takes_it_as_an_option(data_path, tmp_path):
    """A RELION 3.0 STAR lacking rlnAmplitudeContrast: refused with a message naming the option, read
    with the value given; a file that has the column keeps its own values."""
    from cryoflex_scipion.engine.core.io.star import StarError, read_star, write_star
    blocks = read_star(data_path("empiar_10076_7.star"))
    block = [b for b in blocks.values() if b.loop and "rlnImageName" in b][0]
    assert "rlnAmplitudeContrast" in block
    block.remove("rlnAmplitudeContrast")
    import shutil
    shutil.copy(data_path("empiar_10076_7.mrc"), tmp_path)  # the STAR names its stack relative to itself
    path = str(tmp_path / "no_q0.star")
    write_star(path, [block])
    with pytest.raises(StarError, match="--amplitude-contrast"):
        read_particles(path)
    table = read_particles(path, amplitude_contrast=0.07)
    assert np.array_equal(table.ctf.amplitude_contrast, np.full(len(table), 0.07))
    own = read_particles(data_path("empiar_10076_7.star"), amplitude_contrast=0.5)
    assert not np.any(np.asarray(own.ctf.amplitude_contrast) == 0.5)
