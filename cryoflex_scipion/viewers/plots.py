"""Matplotlib figures of CryoFlex results (no Scipion imports: usable headless and in tests)."""
import numpy as np

__all__ = ["fsc_figure", "gallery_figure", "ground_truth_figure", "read_csv_columns"]


def read_csv_columns(path):
    """``{column: array}`` of a CSV with a header line (as written by the engine)."""
    data = np.genfromtxt(path, delimiter=",", names=True)
    return {name: np.atleast_1d(data[name]) for name in data.dtype.names}


def _figure(figsize):
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, tight_layout=True)


def fsc_figure(freqs, curves, labels, thresholds=(0.143, 0.5), title="Fourier shell correlation", fig=None):
    """FSC curves against spatial frequency, with resolution ticks in A."""
    fig = fig or _figure((6, 4))
    ax = fig.add_subplot(111)
    for curve, label in zip(curves, labels):
        ax.plot(freqs, curve, label=label)
    for t in thresholds:
        ax.axhline(t, color="grey", lw=0.8, ls="--")
        ax.text(freqs[-1], t + 0.01, str(t), ha="right", va="bottom", fontsize=8, color="grey")
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlim(0, freqs[-1])
    ax.set_xlabel("resolution (A)")
    ax.set_ylabel("FSC")
    ticks = ax.get_xticks()
    ax.set_xticks(ticks)
    ax.set_xticklabels(["" if t <= 0 else "%.1f" % (1 / t) for t in ticks])
    ax.set_title(title)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return fig


def gallery_figure(images, titles=None, columns=8, fig=None):
    """A grid of images (first axis = image)."""
    n = len(images)
    rows = int(np.ceil(n / columns))
    fig = fig or _figure((1.5 * columns, 1.5 * rows))
    for i, img in enumerate(images):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(img, cmap="gray", origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    return fig


def ground_truth_figure(truth, fig=None):
    """Distribution of simulated orientations, defocus and conformations (ground_truth.csv columns)."""
    amps = sorted(k for k in truth if k.startswith("amplitude_"))
    panels = 3 if (amps or "frame" in truth) else 2
    fig = fig or _figure((4 * panels, 3.5))
    ax = fig.add_subplot(1, panels, 1)
    ax.scatter(truth["rot"], truth["tilt"], s=2, alpha=0.5)
    ax.set_xlabel("rot (deg)")
    ax.set_ylabel("tilt (deg)")
    ax.set_title("projection directions")
    ax = fig.add_subplot(1, panels, 2)
    ax.hist(truth["defocusU"], bins=30)
    ax.set_xlabel("defocus U (A)")
    ax.set_title("defocus")
    if amps:
        ax = fig.add_subplot(1, panels, 3)
        if len(amps) >= 2:
            ax.scatter(truth[amps[0]], truth[amps[1]], s=2, alpha=0.5)
            ax.set_xlabel(amps[0])
            ax.set_ylabel(amps[1])
        else:
            ax.hist(truth[amps[0]], bins=30)
            ax.set_xlabel(amps[0])
        ax.set_title("normal-mode amplitudes")
    elif "frame" in truth:
        ax = fig.add_subplot(1, panels, 3)
        frames = truth["frame"].astype(int)
        ax.hist(frames, bins=np.arange(frames.max() + 2) - 0.5)
        ax.set_xlabel("structure index")
        ax.set_title("conformations")
    return fig


def modes_figure(table, threshold=None, fig=None):
    """Eigenvalue and collectivity of each mode (modes.csv columns); disabled modes in grey."""
    fig = fig or _figure((10, 3.8))
    modes = table["mode"].astype(int)
    colours = ["tab:blue" if e else "lightgrey" for e in table["enabled"] > 0]
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(modes, table["eigenvalue"], color=colours)
    ax.set_xlabel("mode")
    ax.set_ylabel("eigenvalue")
    ax.set_title("eigenvalues (grey: disabled)")
    ax = fig.add_subplot(1, 2, 2)
    ax.bar(modes, table["collectivity"], color=colours)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label="threshold")
        ax.legend()
    ax.set_ylim(0, 1)
    ax.set_xlabel("mode")
    ax.set_ylabel("collectivity")
    ax.set_title("collectivity")
    return fig


def landscape_figure(reduced, groups=None, colour=None, colour_label=None, fig=None):
    """Density of the landscape with particles coloured by group (or by ``colour`` values, e.g. ground
    truth); one panel for 2 dimensions, the three pairs of the first three axes otherwise."""
    z = np.asarray(reduced)
    dims = z.shape[1]
    pairs = [(0, 1)] if dims == 2 else ([(0, 1), (0, 2), (1, 2)] if dims >= 3 else [])
    fig = fig or _figure((5 * max(len(pairs), 1), 4.5))
    if not pairs:  # one dimension: histogram per group
        ax = fig.add_subplot(111)
        if groups is not None and (groups >= 0).any():
            for g in np.unique(groups[groups >= 0]):
                ax.hist(z[groups == g, 0], bins=50, alpha=0.6, label="group %d" % (g + 1))
            ax.legend(fontsize=7)
        else:
            ax.hist(z[:, 0], bins=100)
        ax.set_xlabel("axis 1")
        return fig
    for i, (a, b) in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), i + 1)
        if len(z) > 2000:  # density backdrop; with few particles the points say it all
            ax.hexbin(z[:, a], z[:, b], gridsize=60, cmap="Greys", mincnt=1, bins="log")
        if colour is not None:
            sc = ax.scatter(z[:, a], z[:, b], c=colour, s=3, cmap="viridis", alpha=0.7)
            fig.colorbar(sc, ax=ax, label=colour_label or "")
        elif groups is not None and (groups >= 0).any():
            ax.scatter(z[groups >= 0, a], z[groups >= 0, b], c=groups[groups >= 0], s=3, cmap="tab10", alpha=0.7)
            for g in np.unique(groups[groups >= 0]):
                c = z[groups == g].mean(0)
                ax.text(c[a], c[b], str(g + 1), fontsize=9, weight="bold", ha="center", va="center")
        ax.set_xlabel("axis %d" % (a + 1))
        ax.set_ylabel("axis %d" % (b + 1))
    fig.suptitle("conformational landscape")
    return fig


def loss_figure(columns, fig=None):
    """CryoTRANS loss per iteration, one line per stage (W2 and L2 on their own axes), rigidity dotted."""
    fig = fig or _figure((7, 4))
    stages = np.asarray(columns["stage"], dtype=int)
    kinds_w2 = np.isfinite(np.asarray(columns.get("w2", np.full(len(stages), np.nan)), dtype=float))
    ax = fig.add_subplot(111)
    offset = 0
    for s in np.unique(stages):
        sel = stages == s
        it = np.asarray(columns["iteration"])[sel] + offset
        ax.plot(it, np.asarray(columns["loss"])[sel], label="stage %d (%s, %d^3)" % (
            s + 1, "W2" if kinds_w2[sel].any() else "L2", int(np.asarray(columns["grid"])[sel][0])))
        if "rigidity" in columns and np.isfinite(np.asarray(columns["rigidity"])[sel]).any():
            ax.plot(it, np.asarray(columns["rigidity"])[sel], ls=":", color=ax.lines[-1].get_color())
        offset = it.max()
    ax.set_xlabel("iteration (all stages)")
    ax.set_ylabel("loss (W2: A^2 per unit mass; dotted: rigidity)")
    ax.set_title("CryoTRANS training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def read_csv_rows(path):
    """Rows of a CSV with a header line as dicts of strings (text columns kept, unlike
    :func:`read_csv_columns`)."""
    import csv
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _floats(rows, key):
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])


def residue_profile_figure(rows, fig=None):
    """Dynamics^DEFMap per residue (one panel per chain), with the B-factor z-score when present."""
    fig = fig or _figure((9, 4))
    chains = list(dict.fromkeys(r["chain"] for r in rows))
    for i, chain in enumerate(chains):
        sel = [r for r in rows if r["chain"] == chain]
        resid = _floats(sel, "resid")
        ax = fig.add_subplot(len(chains), 1, i + 1)
        pred = _floats(sel, "dynamics_defmap")
        ax.plot(resid, pred, lw=1.2, label="DEFMap (residue mean z)")
        if "label_z" in sel[0]:
            label = _floats(sel, "label_z")
            ok = np.isfinite(pred) & np.isfinite(label)
            r = np.corrcoef(pred[ok], label[ok])[0, 1] if ok.sum() > 2 else np.nan
            ax.plot(resid, label, lw=1, alpha=0.7, label="B-factors (z), r = %.2f" % r)
        ax.set_ylabel("chain %s" % chain)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("residue number")
    fig.suptitle("DEFMap dynamics per residue")
    return fig


def training_curves_figure(columns, losses=("train_loss", "val_loss"), scores=("val_r",), title="training", fig=None):
    """Loss columns per epoch (left axis, log scale) and score columns (right axis)."""
    fig = fig or _figure((7, 4))
    ax = fig.add_subplot(111)
    epoch = np.asarray(columns["epoch"])
    for key in losses:
        if key in columns:
            ax.plot(epoch, columns[key], label=key.replace("_", " "))
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    present = [k for k in scores if k in columns]
    if present:
        ax2 = ax.twinx()
        for key in present:
            ax2.plot(epoch, columns[key], ls="--", color="k", alpha=0.6, label=key.replace("_", " "))
        ax2.set_ylabel(", ".join(k.replace("_", " ") for k in present))
        ax2.legend(fontsize=8, loc="center right")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title)
    return fig


def deephemnma_curves_figure(columns, fig=None):
    """DeepHEMNMA training: losses (left) and the validation errors of each target (right panels)."""
    fig = fig or _figure((10, 4))
    epoch = np.asarray(columns["epoch"])
    ax = fig.add_subplot(1, 4, 1)
    for key in ("train_loss", "val_loss"):
        if key in columns:
            ax.plot(epoch, columns[key], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_title("L1 loss (standardised)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for i, (key, title) in enumerate((("val_amplitude_mae", "amplitude MAE"), ("val_angle_deg", "angle error (deg)"),
                                      ("val_shift_A", "shift error (A)")), start=2):
        ax = fig.add_subplot(1, 4, i)
        if key in columns:
            ax.plot(epoch, columns[key], color="C%d" % i)
        ax.set_xlabel("epoch")
        ax.set_title("validation " + title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("DeepHEMNMA training")
    return fig
