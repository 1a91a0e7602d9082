"""DeepHEMNMA engine: pose conversions of predictions, the augmentation rule checked with projections,
label handling, checkpoint resume, and a short training that must beat the predict-the-mean baseline."""
import os
import shutil

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.atoms import deform, read_atoms
from cryoflex_scipion.engine.core.fourier import rotate_images
from cryoflex_scipion.engine.core.metrics import image_correlation
from cryoflex_scipion.engine.core.projection import project_gaussians
from cryoflex_scipion.engine.deephemnma import (DeepHEMNMANet, Labels, LabelScaler, ParticleImages, TrainConfig,
                                                TrainingData, TrainingJob, count_parameters, labels_from_csv,
                                                outlier_mask, predict_images, quaternion_l1, rotate_images_exact,
                                                rotate_labels, run_job, to_pose, train)
from cryoflex_scipion.engine.nma.elastic import compute_modes

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _project(coords, euler, origin, size, apix, sigma=2.0):
    rot = torch.as_tensor(g.euler_to_matrix(euler))
    shifts = torch.as_tensor(g.origin_to_shift(origin / apix))
    return project_gaussians(torch.as_tensor(coords), torch.ones(len(coords), dtype=torch.float64), sigma, rot,
                             size, apix, shifts_px=shifts)


def test_resnet34_layout():
    """The full network: ResNet-34 (21.3 M parameters with a 1-channel stem and the 1000-way layer) plus
    the 1000-512-128 heads; 'separate' has one backbone per target."""
    shared = DeepHEMNMANet(3)
    backbone = count_parameters(shared.backbone)
    # torchvision's resnet34 has 21,797,672 parameters with a 3-channel stem: 2 x 64 x 49 fewer here.
    assert backbone == 21_797_672 - 2 * 64 * 49
    head = lambda k: 1000 * 512 + 512 + 512 * 128 + 128 + 128 * k + k  # noqa: E731
    assert count_parameters(shared) == backbone + head(3) + head(4) + head(2)
    separate = DeepHEMNMANet(3, "separate", width=8, blocks=(1, 1, 1, 1), features=32, hidden=(16, 8))
    out = separate(torch.randn(5, 40, 40))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"amplitudes": (5, 3), "quaternion": (5, 4), "shifts": (5, 2)}
    assert len(separate.backbones) == 3


def test_prediction_quaternion_euler_round_trip_exact():
    """Predicted quaternions (any sign, any norm) -> canonical unit quaternion and ZYZ Euler angles that are
    the same rotation to 1e-6 degree, through the engine's prediction path."""
    torch.manual_seed(0)
    net = DeepHEMNMANet(2, blocks=(1, 1, 1, 1), width=4, features=8, hidden=(8,), dropout=0.0).eval()
    with torch.no_grad():  # spread the raw quaternion outputs over all signs and several norms
        net.heads["quaternion"].mlp[-1].weight.mul_(50.0)
        net.heads["quaternion"].mlp[-1].bias.copy_(torch.tensor([-0.3, 0.2, -0.1, 0.4]))
    scaler = LabelScaler([0.0, 0.0], [1.0, 1.0], 1.0)
    res = predict_images(net, torch.randn(300, 24, 24), scaler, batch_size=64)
    q, euler = res["quaternion"], res["euler"]
    assert q.dtype == np.float64 and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-12) and (q[:, 0] >= 0).all()
    back = g.euler_to_quaternion(euler)
    err = g.angular_distance(g.quaternion_to_matrix(q), g.quaternion_to_matrix(back))
    assert err.max() < 1e-6
    # raw outputs of either sign give the same pose
    raw = np.random.default_rng(1).normal(size=(500, 4)) * np.random.default_rng(2).uniform(0.1, 5, (500, 1))
    q1, e1 = to_pose(raw)
    q2, e2 = to_pose(-raw)
    assert np.allclose(q1, q2, atol=1e-12)
    assert g.angular_distance(g.euler_to_matrix(e1), g.quaternion_to_matrix(raw)).max() < 1e-6
    # the sign-invariant loss: q and -q cost the same, and nothing for the true rotation
    t = torch.as_tensor(q1[:10])
    assert torch.allclose(quaternion_l1(-t * 3, t), torch.zeros(10, dtype=t.dtype), atol=1e-12)


@pytest.mark.parametrize("size", [64, 63])
def test_augmentation_rule_with_projections(size):
    """Turning a projection of (rot, tilt, psi, origin) in-plane by alpha equals the projection at
    psi + alpha with the origin turned by inplane_matrix(alpha): correlation > 0.99 required (0.9999
    observed, exact to the projector's precision), for quarter turns, arbitrary and negative angles,
    even and odd boxes, and shifted particles."""
    rng = np.random.default_rng(0)
    atoms = rng.normal(0, 7, (80, 3))
    apix, n = 1.5, 10
    euler = rng.uniform([-180, 0, -180], [180, 180, 180], (n, 3))
    origin = rng.uniform(-6, 6, (n, 2))
    alpha = np.concatenate([[90, 180, 270, -90, 45, -45, 359.5], rng.uniform(-360, 360, n - 7)])
    image = _project(atoms, euler, origin, size, apix)
    turned = rotate_images_exact(image, torch.as_tensor(alpha))
    q_new, o_new = rotate_labels(g.euler_to_quaternion(euler), origin, alpha)
    expected = _project(atoms, g.quaternion_to_euler(q_new), o_new, size, apix)
    corr = image_correlation(turned, expected)
    assert corr.min() > 0.99 and corr.min() > 0.9999
    # the rule in Euler form: psi + alpha, rot and tilt unchanged
    moved = euler.copy()
    moved[:, 2] += alpha
    assert g.angular_distance(g.euler_to_matrix(moved), g.quaternion_to_matrix(q_new)).max() < 1e-9
    assert np.allclose(o_new, np.einsum("nij,nj->ni", g.inplane_matrix(alpha), origin))
    # same direction as the core's (bilinear) rotation; torch labels give the numpy labels
    assert image_correlation(rotate_images(image, torch.as_tensor(alpha)), turned).min() > 0.99
    q_t, o_t = rotate_labels(torch.as_tensor(g.euler_to_quaternion(euler)), torch.as_tensor(origin),
                             torch.as_tensor(alpha))
    assert np.allclose(q_t.numpy(), q_new) and np.allclose(o_t.numpy(), o_new)


def test_augmentation_keeps_noise_spectrum():
    """Fourier-shear rotation keeps white noise white (variance within 3%); bilinear interpolation would
    lose over half of it, which is why the augmentation does not use it."""
    noise = torch.randn(64, 48, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alpha = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 360
    assert rotate_images_exact(noise, alpha).var() / noise.var() > 0.97
    assert rotate_images(noise, alpha).var() / noise.var() < 0.6


def test_labels_outliers_and_scaler(tmp_path):
    rng = np.random.default_rng(0)
    amps = rng.normal(0, 50, (400, 3))
    amps[:3] = 1000.0 * np.array([[1, 0, 0], [0, -1, 0], [0, 0, 1]])
    mask = outlier_mask(amps, 3.2)
    assert mask[:3].all() and mask[3:].mean() < 0.02
    assert not outlier_mask(amps, 0).any()
    labels = Labels(amps, rng.uniform(0, 90, (400, 3)), rng.normal(0, 2, (400, 2)), [7, 8, 9])
    scaler = LabelScaler.fit(labels)
    t = scaler.encode(torch.as_tensor(amps), torch.zeros(400, 4), torch.as_tensor(labels.origin_A))
    back = scaler.decode({"amplitudes": t["amplitudes"], "shifts": t["shifts"]})
    assert np.allclose(back["amplitudes"].numpy(), amps) and np.allclose(back["origin_A"].numpy(), labels.origin_A)
    assert abs(float(t["shifts"].pow(2).mean()) - 1.0) < 1e-9
    assert LabelScaler.from_dict(scaler.to_dict()).to_dict() == scaler.to_dict()
    with pytest.raises(ValueError, match="NaN"):
        Labels(np.where(np.arange(400)[:, None] == 5, np.nan, amps), labels.euler, labels.origin_A, [7, 8, 9], "x")
    assert labels.select_modes([9, 7]).amplitudes[0].tolist() == [amps[0, 2], amps[0, 0]]
    csv = tmp_path / "gt.csv"
    csv.write_text("index,rot,tilt,psi,originX_A,originY_A,amplitude_1,amplitude_2\n1,10,20,30,1,2,5,6\n"
                   "2,11,21,31,-1,-2,-5,-6\n")
    read = labels_from_csv(str(csv), [7, 9])
    assert read.mode_numbers == [7, 9] and read.amplitudes.tolist() == [[5, 6], [-5, -6]]


def _tiny_data(n=48, size=24, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, size, size)).astype(np.float32)
    euler = g.matrix_to_euler(g.random_rotations(n, torch.Generator().manual_seed(seed)).numpy())
    labels = Labels(rng.normal(size=(n, 2)), euler, rng.normal(size=(n, 2)), [7, 8])
    return TrainingData(ParticleImages(images, size), labels, np.arange(n - 8), np.arange(n - 8, n))


def _tiny_net():
    torch.manual_seed(0)
    return DeepHEMNMANet(2, blocks=(1, 1), width=4, features=16, hidden=(16, 8), dropout=0.5)


def test_checkpoint_resume_is_identical(tmp_path):
    """Three epochs in one go, and one epoch then a resume for two more: the same weights, optimiser
    state and history (dropout, augmentation and order are seeded per epoch)."""
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-3, warmup_epochs=1)
    full, hist_full = train(_tiny_data(), _tiny_net(), config, checkpoint=str(tmp_path / "a.pt"))
    ckpt = str(tmp_path / "b.pt")
    train(_tiny_data(), _tiny_net(), config, checkpoint=ckpt, stop_after=1)
    assert torch.load(ckpt, weights_only=True)["state"]["epoch"] == 1
    resumed, hist_resumed = train(_tiny_data(), _tiny_net(), config, checkpoint=ckpt)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(hist_full) == strip(hist_resumed) and len(hist_full) == 3
    a, b = torch.load(str(tmp_path / "a.pt"), weights_only=True), torch.load(ckpt, weights_only=True)
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    with pytest.raises(ValueError, match="another network"):
        torch.manual_seed(0)
        train(_tiny_data(), DeepHEMNMANet(2, blocks=(1, 1), width=8, features=16, hidden=(16, 8)), config,
              checkpoint=ckpt)


def test_rerun_resumes_only_for_the_same_inputs_and_settings(tmp_path, capsys):
    """A rerun of a finished job with the same inputs and settings resumes (no epoch trained, same
    network); with other labels, other particle images or another number of epochs it trains from
    scratch (the old checkpoint moved aside) instead of returning the old network; a speed setting
    (checkpoint interval, validation batch) does not count."""
    data = _tiny_data(n=32, size=16)
    config = TrainConfig(epochs=2, batch_size=8, warmup_epochs=1)
    net_config = _tiny_net().config
    ckpt = str(tmp_path / "checkpoint.pt")

    def job(labels=data.labels, images=None, **settings):
        images = data.images.cache.numpy() if images is None else images
        cfg = TrainConfig(**{**config.__dict__, **settings})
        return TrainingJob(images, labels, data.train, data.val, 16, net_config, cfg, checkpoint=ckpt)

    net, hist, _ = run_job(job())
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    capsys.readouterr()
    again, hist_again, _ = run_job(job(checkpoint_seconds=60.0, eval_batch_size=5))
    assert "resumed from %s after epoch 2" % ckpt in capsys.readouterr().out
    assert hist_again == hist and all(torch.equal(v, again.state_dict()[k]) for k, v in weights.items())

    rng = np.random.default_rng(5)
    other_labels = Labels(rng.normal(size=(32, 2)), data.labels.euler, data.labels.origin_A, [7, 8])
    shutil.copy(ckpt, ckpt + ".first")
    for changed, differs in ((job(labels=other_labels), "(differs in: inputs.labels, inputs.scaler."),
                             (job(images=np.flip(data.images.cache.numpy(), 0).copy()),
                              "other inputs (differs in: inputs.images.images)"),
                             (job(epochs=3), "other training settings (differs in: training.epochs)")):
        shutil.copy(ckpt + ".first", ckpt)  # the first run's checkpoint each time
        new, hist_new, _ = run_job(changed)
        out = capsys.readouterr().out
        assert "was written for" in out and differs in out and "starting from scratch" in out, out
        assert "resumed" not in out and os.path.exists(ckpt + ".stale")
        strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
        assert len(hist_new) == changed.config.epochs and strip(hist_new[:2]) != strip(hist)  # not continued
        assert torch.load(ckpt, weights_only=True)["state"]["epoch"] == changed.config.epochs


def test_time_limit_plans_epochs(tmp_path):
    """With a time limit the number of epochs is fixed after the second one so that the cosine
    schedule ends (at a small learning rate) within the limit."""
    config = TrainConfig(epochs=1000, batch_size=16, time_limit=6.0, warmup_epochs=1)
    net, hist = train(_tiny_data(), _tiny_net(), config, checkpoint=str(tmp_path / "c.pt"))
    state = torch.load(str(tmp_path / "c.pt"), weights_only=True)["state"]
    assert 3 <= len(hist) < 1000 and state["planned_epochs"] == len(hist)
    assert hist[-1]["seconds"] < 6.0 + 2.0 and hist[-1]["lr"] < 0.1 * config.lr


@pytest.fixture(scope="module")
def adk_ca():
    """C-alpha atoms of closed AdK (centred) and their ANM modes 7 and 8."""
    model = read_atoms(os.path.join(DATA, "adk_closed.pdb"), "name CA")
    coords = model.coords - model.center()
    return coords, compute_modes(coords, 8, "ANM", 12.0).vectors[6:8]


def _simulate_adk(coords, modes, n, size, apix, seed):
    """Noise-free projections of C-alpha AdK deformed along two ANM modes: amplitudes uniform in
    +/-(60, 45), uniform random orientations, origins uniform in +/-3 A."""
    rng = np.random.default_rng(seed)
    amps = rng.uniform(-1, 1, (n, 2)) * np.array([60.0, 45.0])
    rot = g.random_rotations(n, torch.Generator().manual_seed(seed))
    origin = rng.uniform(-3, 3, (n, 2))
    xyz = deform(torch.as_tensor(coords, dtype=torch.float32), torch.as_tensor(modes, dtype=torch.float32),
                 torch.as_tensor(amps, dtype=torch.float32))
    images = project_gaussians(xyz, torch.ones(len(coords)), 3.0, rot.float(), size, apix,
                               shifts_px=torch.as_tensor(g.origin_to_shift(origin / apix), dtype=torch.float32))
    return images.numpy(), Labels(amps, g.matrix_to_euler(rot.numpy()), origin, [7, 8], "simulation")


def _mean_rotation(quaternions):
    """The chordal mean rotation: the principal eigenvector of sum q q^T (sign-free)."""
    return np.linalg.eigh(quaternions.T @ quaternions)[1][:, -1]


def test_short_training_beats_the_mean(adk_ca):
    """1,500 training images of 32 px (80 A box) of AdK C-alpha atoms on two modes, reduced network
    (ResNet with one block per stage, width 16), 100 epochs on one CPU thread (about 45 s).  On 300 held-out
    particles it must beat predicting the training mean by these margins: amplitude mean absolute error
    <= 0.8 x the baseline's, mean angular error <= 0.75 x the baseline's (~126 degrees: any fixed
    orientation), shift mean absolute error <= 0.25 x the baseline's."""
    coords, modes = adk_ca
    images, labels = _simulate_adk(coords, modes, 1900, 32, 2.5, seed=0)
    train_pos, val_pos, test_pos = np.arange(1500), np.arange(1500, 1600), np.arange(1600, 1900)
    data = TrainingData(ParticleImages(images[:1600], 32), labels.subset(np.arange(1600)), train_pos, val_pos)
    torch.manual_seed(0)
    net = DeepHEMNMANet(2, blocks=(1, 1, 1, 1), width=16, features=128, hidden=(64, 32), dropout=0.0)
    net, history = train(data, net, TrainConfig(epochs=100, batch_size=64, lr=2e-3, warmup_epochs=1))
    pred = predict_images(net, ParticleImages(images[test_pos], 32).cache, data.scaler, batch_size=300)
    truth = labels.subset(test_pos)
    train_labels = labels.subset(train_pos)

    amp = np.abs(pred["amplitudes"] - truth.amplitudes).mean()
    amp_base = np.abs(train_labels.amplitudes.mean(0) - truth.amplitudes).mean()
    ang = g.angular_distance(g.euler_to_matrix(pred["euler"]), g.euler_to_matrix(truth.euler)).mean()
    mean_q = np.tile(_mean_rotation(train_labels.quaternion), (len(test_pos), 1))
    ang_base = g.angular_distance(g.quaternion_to_matrix(mean_q), g.euler_to_matrix(truth.euler)).mean()
    shift = np.abs(pred["origin_A"] - truth.origin_A).mean()
    shift_base = np.abs(train_labels.origin_A.mean(0) - truth.origin_A).mean()
    print("amplitudes %.2f (baseline %.2f), angles %.1f deg (%.1f), shifts %.3f A (%.3f)"
          % (amp, amp_base, ang, ang_base, shift, shift_base))
    assert amp <= 0.8 * amp_base
    assert ang <= 0.75 * ang_base
    assert shift <= 0.25 * shift_base
