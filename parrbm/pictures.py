"""What a trained RBM looks like: its filters as image tiles (grey for digits, colour for
32x32x3 images), reconstructions beside their inputs, and the training curves.

    from parrbm.pictures import plot_filters
    plot_filters(rbm, "filters.png")                  # shape guessed from n_features
    plot_filters(rbm, "filters.png", shape=(32, 32, 3))

Colour vectors are in CIFAR-10's order (all red, then green, then blue, each row-major).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def guess_shape(n_features: int) -> tuple[int, ...]:
    """(h, w) for a square number of features, (s, s, 3) for three squares; else ValueError."""
    s = math.isqrt(n_features)
    if s * s == n_features:
        return (s, s)
    s = math.isqrt(n_features // 3)
    if n_features % 3 == 0 and s * s * 3 == n_features:
        return (s, s, 3)
    raise ValueError(
        f"{n_features} features are not a square image or three square colour planes; "
        f"give the image shape (e.g. 28x20 or 32x32x3)"
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """'8x8' -> (8, 8), '32x32x3' -> (32, 32, 3)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in (2, 3) or min(dims) < 1 or (len(dims) == 3 and dims[2] != 3):
        raise ValueError(f"image shape {text!r}: expected HxW or HxWx3, e.g. 8x8 or 32x32x3")
    return dims


def as_images(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, prod(shape)) -> (n, h, w) or (n, h, w, 3) (colour rows channel-major)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.shape[1] != int(np.prod(shape)):
        raise ValueError(f"rows of {rows.shape[1]} values do not make {'x'.join(map(str, shape))} images")
    if len(shape) == 3:
        return rows.reshape(-1, shape[2], shape[0], shape[1]).transpose(0, 2, 3, 1)
    return rows.reshape(-1, *shape)


def normalise_each(images: np.ndarray) -> np.ndarray:
    """Every image stretched to [0, 1] on its own (a filter's sign and scale are arbitrary)."""
    axes = tuple(range(1, images.ndim))
    lo = images.min(axis=axes, keepdims=True)
    hi = images.max(axis=axes, keepdims=True)
    return (images - lo) / np.where(hi > lo, hi - lo, 1.0)


def tile(images: np.ndarray, cols: int | None = None, pad: int = 1, background: float = 1.0) -> np.ndarray:
    """(n, h, w[, 3]) in [0, 1] -> one (rows*(h+pad)+pad, cols*(w+pad)+pad[, 3]) mosaic."""
    n, h, w = images.shape[:3]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]), background)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im
    return out


def _weights(model) -> np.ndarray:
    """(n_hidden, n_features) filters of an RBM, or of a DBN's first layer."""
    if hasattr(model, "rbms_"):
        model = model.rbms_[0]
    if not hasattr(model, "components_"):
        raise ValueError("plot_filters: the model is not fitted")
    return np.asarray(model.components_, dtype=np.float64)


def _save(fig, out) -> None:
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        from parrbm._files import write_atomic

        fmt = out.suffix.lstrip(".").lower() or "png"
        write_atomic(out, lambda fh: fig.savefig(fh, format=fmt, dpi=150, bbox_inches="tight"))


def plot_filters(model, out=None, *, shape=None, n: int = 100, title: str | None = None):
    """The first ``n`` filters (rows of ``components_``) as image tiles; each filter
    stretched to its own range. Returns the matplotlib Figure (saved to ``out`` if given)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    W = _weights(model)
    shape = tuple(shape) if shape is not None else guess_shape(W.shape[1])
    order = np.argsort(-np.linalg.norm(W, axis=1))[:n]  # the strongest filters first
    images = normalise_each(as_images(W[order], shape))
    mosaic = tile(images)
    size = min(12.0, max(4.0, mosaic.shape[1] / 20))
    fig, ax = plt.subplots(figsize=(size, size * mosaic.shape[0] / mosaic.shape[1] + 0.5))
    ax.imshow(mosaic, cmap="gray" if len(shape) == 2 else None, interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(
        title
        or f"{len(order)} of {W.shape[0]} filters ({'x'.join(map(str, shape))}), "
        f"strongest first, each scaled to its own range",
        fontsize=10,
    )
    _save(fig, out)
    return fig


def plot_reconstructions(model, X: np.ndarray, out=None, *, shape=None, n: int = 10, preprocessor=None):
    """Inputs (top row) and their mean-field reconstructions (bottom row). With the
    ``preprocessor`` the model was trained through, both are mapped back to pixels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    X = np.asarray(X)[:n]
    R = model.reconstruct(X)
    if preprocessor is not None:
        X, R = preprocessor.inverse_transform(X), preprocessor.inverse_transform(R)
    shape = tuple(shape) if shape is not None else guess_shape(X.shape[1])
    lo, hi = float(np.min(X)), float(np.max(X))
    scale = lambda a: np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)  # one range for both rows
    images = np.concatenate([scale(as_images(X, shape)), scale(as_images(R, shape))])
    mosaic = tile(images, cols=len(X))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(X)), 2.2))
    ax.imshow(mosaic, cmap="gray" if len(shape) == 2 else None, interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("inputs (top) and reconstructions (bottom)", fontsize=10)
    _save(fig, out)
    return fig


def plot_training_curves(history: list[dict], out=None):
    """Reconstruction error (training and held-out), pseudo-likelihood and free-energy
    gap per epoch, from ``RBM.history_``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("plot_training_curves: the history is empty (fit the model first)")
    epochs = [h["epoch"] for h in history]
    # training and held-out both measured after the epoch, alike; the epoch's own error
    # (CD's samples during it, as the model changed) dotted beside them
    panels = [
        (
            "reconstruction error (MSE per element)",
            [
                ("training, after the epoch", "train_reconstruction_error"),
                ("held-out, after the epoch", "valid_reconstruction_error"),
                ("training, during the epoch", "reconstruction_error"),
            ],
        )
    ]
    if any(h.get("pseudo_likelihood") is not None for h in history):
        panels.append(("pseudo-likelihood per sample", [("training", "pseudo_likelihood")]))
    if any(h.get("free_energy_gap") is not None for h in history):
        panels.append(("free energy: held-out - training", [("gap", "free_energy_gap")]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (label, series) in zip(axes[0], panels):
        for name, key in series:
            ys = [h.get(key) for h in history]
            if any(y is not None for y in ys):
                ax.plot(
                    epochs,
                    [np.nan if y is None else y for y in ys],
                    marker="o",
                    ms=3,
                    label=name,
                    linestyle=":" if "during" in name else "-",
                )
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)
    return fig
