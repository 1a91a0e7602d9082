"""Scipion objects <-> engine files: particles (alignment, CTF), volumes, normal modes."""
import os

import numpy as np
import pytest


def _particle_set(tmp_path, table, name="parts.sqlite"):
    from pwem.objects import Acquisition, SetOfParticles
    from cryoflex_scipion.convert import fill_particles
    parts = SetOfParticles(filename=str(tmp_path / name))
    acq = Acquisition(voltage=float(table.ctf.voltage[0]), sphericalAberration=float(table.ctf.cs[0]),
                      amplitudeContrast=float(table.ctf.amplitude_contrast[0]), magnification=10000)
    fill_particles(parts, table, acquisition=acq)
    parts.write()
    return parts


def _reopen(parts):
    from pwem.objects import SetOfParticles
    fn = parts.getFileName()
    parts.close()
    again = SetOfParticles(filename=fn)
    again.loadAllProperties()
    return again


def test_alignment_matrices_match_scipion_relion_plugin_formula():
    """Our ALIGN_PROJ matrices equal those of Scipion's RELION/Xmipp plugins (matrixFromGeometry)."""
    from pwem.convert.transformations import euler_from_matrix, euler_matrix
    from cryoflex_scipion.convert import matrices_from_pose, pose_from_matrices
    rng = np.random.default_rng(0)
    euler = np.stack([rng.uniform(-180, 180, 50), rng.uniform(1, 179, 50), rng.uniform(-180, 180, 50)], -1)
    origin = rng.uniform(-5, 5, (50, 2))
    ours = matrices_from_pose(euler, origin)
    for i in range(50):
        m = euler_matrix(*(-np.deg2rad(euler[i])), axes="szyz")
        m[:3, 3] = -np.array([origin[i, 0], origin[i, 1], 0.0])
        assert np.allclose(ours[i], np.linalg.inv(m), atol=1e-12)
        inv = np.linalg.inv(ours[i])
        assert np.allclose(-np.rad2deg(euler_from_matrix(inv, axes="szyz")), euler[i], atol=1e-9)
    e2, o2 = pose_from_matrices(ours)
    assert np.allclose(e2, euler, atol=1e-9) and np.allclose(o2, origin, atol=1e-12)


def test_particles_star_round_trip(tmp_path, data_path):
    """relion31.star -> SetOfParticles -> STAR: angles, shifts, defocus and sampling preserved."""
    from cryoflex_scipion.convert import particles_to_table, write_particles_star
    from cryoflex_scipion.engine.core.geometry import euler_to_matrix
    from cryoflex_scipion.engine.core.io.particles import read_particles
    from cryoflex_scipion.engine.core.io.stack import ImageSource
    src = read_particles(data_path("relion31.star"))
    parts = _reopen(_particle_set(tmp_path, src))
    assert parts.getSize() == 5 and parts.hasAlignmentProj() and parts.hasCTF()
    assert parts.getSamplingRate() == 2.806
    out = str(tmp_path / "back.star")
    write_particles_star(parts, out)
    back = read_particles(out)
    assert np.allclose(back.euler, src.euler, atol=1e-9)
    assert np.allclose(euler_to_matrix(back.euler), euler_to_matrix(src.euler), atol=1e-12)
    assert np.allclose(back.origin_A, src.origin_A, atol=1e-12)
    for field in ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs", "amplitude_contrast"):
        assert np.array_equal(np.broadcast_to(getattr(back.ctf, field), (5,)),
                              np.broadcast_to(getattr(src.ctf, field), (5,))), field
    assert np.array_equal(back.apix, src.apix) and np.array_equal(back.box, src.box)
    assert np.array_equal(back.extra["rlnRandomSubset"].astype(int), src.extra["rlnRandomSubset"].astype(int))
    with ImageSource(src) as a, ImageSource(back) as b:
        assert np.array_equal(a.read(np.arange(5)), b.read(np.arange(5)))
    # A set without alignment or CTF gives a table without them.
    table = particles_to_table(parts, use_alignment=False, use_ctf=False)
    assert not table.has_pose and not table.has_ctf


def test_missing_image_file_is_named(tmp_path, data_path):
    import shutil
    from cryoflex_scipion.convert import particles_to_table
    from cryoflex_scipion.engine.core.io.particles import read_particles
    shutil.copy(data_path("relion31.mrcs"), tmp_path / "moved.mrcs")
    src = read_particles(data_path("relion31.star"))
    src.image_file = np.full(len(src), str(tmp_path / "moved.mrcs"))
    parts = _particle_set(tmp_path, src)
    os.remove(tmp_path / "moved.mrcs")
    with pytest.raises(FileNotFoundError, match="moved.mrcs"):
        particles_to_table(parts)


def test_volume_round_trip_with_origin(tmp_path):
    from pwem.objects import Transform, Volume
    from cryoflex_scipion.convert import volume_from_mrc, volume_to_mrc
    from cryoflex_scipion.engine.core.io.mrc import read_map, write_map
    data = np.random.default_rng(1).standard_normal((24, 24, 24)).astype(np.float32)
    src = str(tmp_path / "in.mrc")
    write_map(src, data, 1.0)  # the file header's sampling/origin are not Scipion's
    vol = Volume(location=src + ":mrc")
    vol.setSamplingRate(2.5)
    origin = Transform()
    origin.setShifts(-31.0, 12.5, 7.25)
    vol.setOrigin(origin)
    out = str(tmp_path / "engine.mrc")
    volume_to_mrc(vol, out)
    arr, info = read_map(out)
    assert np.array_equal(arr, data) and info.apix == pytest.approx(2.5)
    assert info.origin == pytest.approx((-31.0, 12.5, 7.25))
    back = volume_from_mrc(out)
    assert back.getSamplingRate() == pytest.approx(2.5)
    assert back.getOrigin().getShifts() == pytest.approx([-31.0, 12.5, 7.25])
    # Default Scipion origin (-dim/2 * sampling) when the volume has none.
    plain = Volume(location=src)
    plain.setSamplingRate(2.0)
    volume_to_mrc(plain, out)
    assert read_map(out)[1].origin == pytest.approx((-24.0, -24.0, -24.0))


def test_non_cubic_volume_rejected(tmp_path):
    from pwem.objects import Volume
    from cryoflex_scipion.convert import volume_to_mrc
    from cryoflex_scipion.engine.core.io.mrc import MRCError, write_map
    src = str(tmp_path / "box.mrc")
    write_map(src, np.zeros((8, 10, 12), np.float32), 1.0)
    vol = Volume(location=src)
    vol.setSamplingRate(1.0)
    with pytest.raises(MRCError, match="cubic"):
        volume_to_mrc(vol, str(tmp_path / "o.mrc"))


def test_normal_modes_to_array(tmp_path):
    from pwem.objects import NormalMode, SetOfNormalModes
    from cryoflex_scipion.convert import modes_to_array
    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((4, 30, 3))
    modes = SetOfNormalModes(filename=str(tmp_path / "modes.sqlite"))
    for k in range(4):
        fn = str(tmp_path / ("vec.%d" % (k + 1)))
        np.savetxt(fn, vecs[k])
        mode = NormalMode(modeFile=fn, collectivity=0.5, score=1.0)
        mode.setEnabled(k != 1)
        modes.append(mode)
    arr, numbers = modes_to_array(modes)
    assert numbers == [1, 3, 4] and np.allclose(arr, vecs[[0, 2, 3]])
    arr, numbers = modes_to_array(modes, numbers=[2, 4])
    assert numbers == [2, 4] and np.allclose(arr, vecs[[1, 3]])


def _six_group_star(tmp_path, data_path):
    """relion31.star's particles spread over 6 optics groups, each with its own voltage, Cs, amplitude
    contrast and beam tilt (12 particles, the 5 images reused)."""
    from cryoflex_scipion.engine.core.io.particles import read_particles
    from cryoflex_scipion.engine.core.io.star import StarBlock
    src = read_particles(data_path("relion31.star"))
    table = src.subset(np.arange(12) % 5)
    table.image_file = np.array([os.path.abspath(os.path.join(src.base_dir, f)) for f in table.image_file])
    groups = np.arange(12) % 6 + 1
    table.optics_group = groups
    voltage = np.array([300.0, 300.0, 200.0, 300.0, 120.0, 300.0])
    cs = np.array([2.7, 2.7, 2.0, 2.6, 1.4, 0.01])
    q0 = np.array([0.1, 0.07, 0.1, 0.1, 0.15, 0.1])
    table.ctf.voltage, table.ctf.cs, table.ctf.amplitude_contrast = (v[groups - 1] for v in (voltage, cs, q0))
    optics = StarBlock("optics")
    optics.set("rlnOpticsGroup", np.arange(1, 7))
    optics.set("rlnOpticsGroupName", np.array(["grid%d" % g for g in range(1, 7)]))
    optics.set("rlnBeamTiltX", np.array([0.0, 0.1, -0.2, 0.3, 0.0, 0.05]))
    table.optics = optics
    path = str(tmp_path / "six_groups.star")
    table.to_star(path)
    return path, groups, voltage, cs, q0


def test_six_optics_groups_keep_their_values_through_scipion(tmp_path, data_path):
    """A 6-group RELION 3.1 STAR -> SetOfParticles -> STAR keeps every group's voltage, Cs, amplitude
    contrast, name and beam tilt (issue 18: group 4's Cs 2.6 used to come back as group 1's 2.7)."""
    from cryoflex_scipion.convert import fill_particles, particles_to_table, write_particles_star
    from cryoflex_scipion.engine.core.io.particles import read_particles
    from cryoflex_scipion.engine.core.io.star import read_star
    path, groups, voltage, cs, q0 = _six_group_star(tmp_path, data_path)
    engine = read_particles(path)
    assert np.array_equal(engine.ctf.cs, cs[groups - 1]) and np.array_equal(engine.ctf.voltage, voltage[groups - 1])

    from pwem.objects import SetOfParticles
    parts = SetOfParticles(filename=str(tmp_path / "six.sqlite"))
    fill_particles(parts, engine)          # acquisition from the particles themselves
    parts.write()
    parts = _reopen(parts)
    acq = parts.getAcquisition()
    assert (acq.getVoltage(), acq.getSphericalAberration(), acq.getAmplitudeContrast()) == (300.0, 2.7, 0.1)
    # Items keep the set's acquisition (per-item values would overwrite the set's while iterating).
    assert {p.getAcquisition().getSphericalAberration() for p in parts.iterItems()} == {2.7}
    assert parts.getAcquisition().getSphericalAberration() == 2.7

    table = particles_to_table(parts)
    assert np.array_equal(table.optics_group, groups)
    assert np.array_equal(table.ctf.voltage, voltage[groups - 1])
    assert np.array_equal(table.ctf.cs, cs[groups - 1])
    assert np.array_equal(table.ctf.amplitude_contrast, q0[groups - 1])

    out = str(tmp_path / "back.star")
    write_particles_star(parts, out)
    back = read_particles(out)
    for field, want in (("voltage", voltage), ("cs", cs), ("amplitude_contrast", q0)):
        assert np.array_equal(getattr(back.ctf, field), want[groups - 1]), field
    block = read_star(out)["optics"]
    assert block.strings("rlnOpticsGroupName").tolist() == ["grid%d" % g for g in range(1, 7)]
    assert np.array_equal(block.floats("rlnBeamTiltX"), [0.0, 0.1, -0.2, 0.3, 0.0, 0.05])
    assert np.array_equal(block.floats("rlnImagePixelSize"), np.full(6, parts.getSamplingRate()))


def test_optics_table_of_a_scipion_relion_import_is_read(tmp_path, data_path):
    """A set made by another plugin: set-level acquisition of group 1, the groups in opticsGroupInfo as
    Scipion's RELION plugin writes them (its own STAR text layout), particles carrying _rlnOpticsGroup."""
    from pwem.objects import Acquisition, SetOfParticles
    from pyworkflow.object import Integer
    from cryoflex_scipion.convert import fill_particles, particles_to_table
    from cryoflex_scipion.engine.core.io.particles import read_particles
    src = read_particles(data_path("relion31.star"))
    parts = SetOfParticles(filename=str(tmp_path / "import.sqlite"))
    acq = Acquisition(voltage=300.0, sphericalAberration=2.7, amplitudeContrast=0.1)
    fill_particles(parts, src, acquisition=acq,
                   item_callback=lambda p, i: setattr(p, "_rlnOpticsGroup", Integer(1 + i % 2)))
    parts.getAcquisition().opticsGroupInfo.set(
        "\n# version 30001\n\ndata_optics\n\nloop_ \n_rlnOpticsGroupName #1 \n_rlnOpticsGroup #2 \n"
        "_rlnVoltage #3 \n_rlnSphericalAberration #4 \n_rlnAmplitudeContrast #5 \n"
        "opticsGroup1 1 300.000000 2.700000 0.100000 \nopticsGroup2 2 200.000000 2.000000 0.070000 \n\n")
    parts.write()
    table = particles_to_table(_reopen(parts))
    assert np.array_equal(table.ctf.cs, [2.7, 2.0, 2.7, 2.0, 2.7])
    assert np.array_equal(table.ctf.voltage, [300.0, 200.0, 300.0, 200.0, 300.0])
    assert np.array_equal(table.ctf.amplitude_contrast, [0.1, 0.07, 0.1, 0.07, 0.1])


def test_particles_of_a_group_missing_from_the_optics_table_are_refused(tmp_path, data_path):
    from pwem.objects import SetOfParticles
    from pyworkflow.object import Integer
    from cryoflex_scipion.convert import fill_particles, particles_to_table
    from cryoflex_scipion.engine.core.io.particles import read_particles
    src = read_particles(data_path("relion31.star"))
    parts = SetOfParticles(filename=str(tmp_path / "bad.sqlite"))
    fill_particles(parts, src, item_callback=lambda p, i: setattr(p, "_rlnOpticsGroup", Integer(7 if i == 3 else 1)))
    parts.write()
    with pytest.raises(ValueError, match=r"optics group\(s\) 7 have no row"):
        particles_to_table(_reopen(parts))
