"""The small report of ``parrbm train``: training curves, filters, reconstructions and
the per-epoch monitors on one self-contained HTML page (the figures also as PNG files)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np


def write_train_report(
    rbm, out: Path, *, data_name: str, X: np.ndarray, shape, preprocessor=None, fit_seconds: float | None = None
) -> Path:
    """Write curves.png, filters.png, reconstructions.png (the last two when ``shape`` is
    known) and report.html into ``out``; returns the page's path."""
    import matplotlib.pyplot as plt

    from parrbm.analysis.report import html_figure, html_page, html_table
    from parrbm.pictures import plot_filters, plot_reconstructions, plot_training_curves

    out = Path(out)
    figures = []
    if rbm.history_:
        figures.append(("Training curves", "curves.png", plot_training_curves(rbm.history_, out / "curves.png")))
    if shape is not None:
        figures.append(("Filters", "filters.png", plot_filters(rbm, out / "filters.png", shape=shape)))
        figures.append(
            (
                "Reconstructions",
                "reconstructions.png",
                plot_reconstructions(rbm, X, out / "reconstructions.png", shape=shape, preprocessor=preprocessor),
            )
        )
    for *_, fig in figures:
        plt.close(fig)
    p = rbm.get_params()
    settings = {
        "data": data_name,
        "model": f"{rbm.n_features_in_} {p['visible']} visible x {p['n_hidden']} binary hidden, {rbm.spec_.dtype}",
        "training": f"CD-{p['cd_k']}{' persistent' if p['persistent'] else ''}, {rbm.epochs_done_} epochs, "
        f"minibatch {p['batch_size']}, learning rate {p['learning_rate']} "
        f"({p['learning_rate_schedule'] if isinstance(p['learning_rate_schedule'], str) else 'custom'}), "
        f"momentum {p['momentum']}, weight decay {p['weight_decay']}, statistics {p['statistics']}",
        "parallel": f"{p['strategy']}, K = {p['workers']}, {p['transport']}",
    }
    if fit_seconds is not None:
        settings["fit time"] = f"{fit_seconds:.2f} s"
    cols = [
        ("epoch", "d"),
        ("learning_rate", ".4g"),
        ("reconstruction_error", ".5f"),
        ("train_reconstruction_error", ".5f"),
        ("valid_reconstruction_error", ".5f"),
        ("pseudo_likelihood", ".3f"),
        ("free_energy_gap", ".3f"),
        ("max_abs_weight", ".3f"),
        ("seconds", ".2f"),
    ]
    cols = [(k, f) for k, f in cols if any(h.get(k) is not None for h in rbm.history_)]
    epochs = [["" if h.get(k) is None else format(h[k], f) for k, f in cols] for h in rbm.history_]
    body = [
        f"<h1>RBM trained on {html.escape(data_name)}</h1>",
        html_table(["setting", "value"], [[k, v] for k, v in settings.items()]),
    ]
    body += [f"<h2>{html.escape(title)}</h2>" + html_figure(out / name, title) for title, name, _ in figures]
    body += ["<h2>Per epoch</h2>", html_table([k.replace("_", " ") for k, _ in cols], epochs)]
    page = out / "report.html"
    from parrbm._files import write_atomic

    write_atomic(page, html_page(f"parrbm train: {data_name}", body))
    return page
