"""MRC, STAR and particle tables, with the real RELION/cryoSPARC files in tests/data."""

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
