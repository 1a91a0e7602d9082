"""DeepHEMNMA multi-process training (torch.distributed, gloo on CPU, 2 processes, tiny network):
the same network and history layout as one process, and a decreasing training loss."""
import numpy as np
import torch

from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.deephemnma import DeepHEMNMANet, Labels, TrainConfig, TrainingJob, run_distributed


def test_two_processes_gloo(tmp_path):
    rng = np.random.default_rng(0)
    n, size = 136, 20
    # learnable at once: the image brightness pattern encodes the first amplitude
    amps = rng.normal(size=(n, 2))
    images = rng.normal(size=(n, size, size)).astype(np.float32) * 0.3
    images[:, : size // 2] += amps[:, :1, None].astype(np.float32)
    labels = Labels(amps, g.matrix_to_euler(g.random_rotations(n, torch.Generator().manual_seed(0)).numpy()),
                    rng.normal(size=(n, 2)), [7, 8])
    net_config = DeepHEMNMANet(2, blocks=(1, 1), width=4, features=16, hidden=(16, 8), dropout=0.0).config
    config = TrainConfig(epochs=20, batch_size=16, lr=1e-2, warmup_epochs=1, augment=False)
    job = TrainingJob(images, labels, np.arange(128), np.arange(128, n), size, net_config, config,
                      checkpoint=str(tmp_path / "ckpt.pt"), curves=str(tmp_path / "curves"))
    net, history = run_distributed(job, 2, "cpu")
    assert len(history) == 20 and all(h["samples"] == 128 for h in history)
    # the learnable target's loss falls (angles and shifts are noise here)
    assert history[-1]["train_amplitudes"] < 0.7 * history[0]["train_amplitudes"]
    assert history[-1]["val_amplitude_mae"] < history[0]["val_amplitude_mae"]
    out = net(torch.randn(3, size, size))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"amplitudes": (3, 2), "quaternion": (3, 4), "shifts": (3, 2)}
    assert (tmp_path / "curves.csv").exists()
