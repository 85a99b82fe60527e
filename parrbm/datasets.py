"""Data sets for RBMs: scikit-learn's digits (and the nudged variant), Fashion-MNIST and
CIFAR-10 from disk, ``.npy`` files, and the paper's random binary data.

Every loader returns ``(X, y)`` with ``X`` of shape (n_samples, n_features) as float64 and
``y`` of shape (n_samples,) as int64 (``y`` is None when the data have no labels), and
raises :class:`DatasetError` naming the file or directory and what was expected.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from scipy.ndimage import shift as _shift

#: CIFAR-10's python-format archive and the folder it extracts to
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: (height, width, channels) of an image of each set, for pictures of filters
IMAGE_SHAPES = {"digits": (8, 8), "nudged-digits": (8, 8), "cifar10": (32, 32, 3), "fashion-mnist": (28, 28)}
#: where Debian's dataset-fashion-mnist package puts the four idx files
FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class DatasetError(ValueError):
    """A data set that is missing or not in the expected format."""


def load_digits(*, nudged: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits scaled to [0, 1]: X (1797, 64), y (1797,).

    ``nudged``: also each image shifted by one pixel up, down, left and right (scikit-learn's
    RBM example), X (8985, 64): the original images first, then the four shifted copies.
    """
    from sklearn.datasets import load_digits as _digits

    d = _digits()
    X, y = d.data / 16.0, d.target.astype(np.int64)
    if nudged:
        X, y = nudge(X, y, (8, 8))
    return X, y


def nudge(X: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """X (n, h*w) and four copies moved by one pixel (zeros shifted in): (5n, h*w), (5n,)."""
    images = X.reshape((-1, *shape))
    moved = [X] + [
        _shift(images, (0, dy, dx), mode="constant", cval=0.0, order=0).reshape(X.shape)
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
    ]
    return np.concatenate(moved), np.concatenate([y] * 5)


def load_fashion_mnist(path: str | Path | None = None, *, subset: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28 x 28 grey images of clothes in 10
    classes, scaled to [0, 1]; 784 visible units, the shape of the paper's MNIST RBM.

    path : a folder holding the four idx files (``train-images-idx3-ubyte`` and
        ``train-labels-idx1-ubyte``, ``t10k-...`` for the test set), gzipped or not;
        default: where Debian's ``dataset-fashion-mnist`` package puts them,
        /usr/share/datasets/fashion-mnist. Nothing is downloaded.
    subset : "train" (60000 images), "test" (10000) or "all" (train then test).

    Returns X (n, 784) float64 and y (n,) int64.
    """
    if subset not in ("train", "test", "all"):
        raise DatasetError(f"fashion-mnist: subset must be 'train', 'test' or 'all', got {subset!r}")
    folder = Path(path if path is not None else FASHION_MNIST_PATH).expanduser()
    how = (
        "install it with 'apt-get install dataset-fashion-mnist' (Debian, Ubuntu), or give the folder of "
        "the four idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, gzipped or not)"
    )
    if not folder.is_dir():
        raise DatasetError(f"fashion-mnist: {folder} is not a folder; {how}")
    parts = []
    for name in ("train", "test") if subset == "all" else (subset,):
        images, labels = (_idx(folder, stem, how) for stem in FASHION_MNIST_FILES[name])
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
            raise DatasetError(
                f"fashion-mnist: {folder}: {name} images of shape {images.shape} with labels "
                f"of shape {labels.shape}; expected (n, 28, 28) and (n,)"
            )
        parts.append((images.reshape(len(images), 784) / 255.0, labels.astype(np.int64)))
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _idx(folder: Path, stem: str, how: str) -> np.ndarray:
    """One idx file (unsigned bytes): ``stem`` or ``stem.gz`` in ``folder``."""
    for f in (folder / stem, folder / f"{stem}.gz"):
        if f.is_file():
            break
    else:
        raise DatasetError(f"fashion-mnist: {folder} lacks {stem} (or {stem}.gz); {how}")
    try:
        raw = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"fashion-mnist: {f}: cannot be read ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DatasetError(f"fashion-mnist: {f} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) != start + int(np.prod(dims)):
        raise DatasetError(
            f"fashion-mnist: {f}: {len(raw) - start} bytes of data for a {dims} array (truncated or damaged)"
        )
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def load_cifar10(path: str | Path, *, subset: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the python-format archive (``cifar-10-python.tar.gz``), the folder it
    extracts to (``cifar-10-batches-py``) or a directory holding either. Nothing is
    downloaded.

    subset : "train" (the five data batches, 50000 images), "test" (10000) or "all".
    Returns X (n, 3072) in [0, 1], pixels in the archive's order (all red, then green,
    then blue, each 32x32 row-major; see :func:`cifar10_images`), and y (n,).
    """
    if subset not in ("train", "test", "all"):
        raise DatasetError(f"cifar10: subset must be 'train', 'test' or 'all', got {subset!r}")
    names = {"train": CIFAR10_TRAIN, "test": (CIFAR10_TEST,), "all": CIFAR10_TRAIN + (CIFAR10_TEST,)}[subset]
    batches = _cifar10_batches(Path(path), names)
    X = np.concatenate([b[0] for b in batches]).astype(np.float64) / 255.0
    y = np.concatenate([b[1] for b in batches]).astype(np.int64)
    return X, y


def cifar10_images(X: np.ndarray) -> np.ndarray:
    """(n, 3072) rows in CIFAR-10's channel-major order -> (n, 32, 32, 3) images."""
    return X.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar10_batches(path: Path, names) -> list[tuple[np.ndarray, np.ndarray]]:
    expected = (
        f"expected the CIFAR-10 python-format archive '{CIFAR10_ARCHIVE}' or its folder "
        f"'{CIFAR10_FOLDER}' holding {', '.join(CIFAR10_TRAIN[:1])} .. {CIFAR10_TRAIN[-1]} and "
        f"{CIFAR10_TEST} (from https://www.cs.toronto.edu/~kriz/cifar.html; parrbm does not download it)"
    )
    candidates = [path] if not path.is_dir() else [path / CIFAR10_FOLDER, path / CIFAR10_ARCHIVE, path]
    for c in candidates:
        if c.is_dir() and all((c / n).is_file() for n in names):
            return [_cifar10_batch((c / n).read_bytes(), c / n) for n in names]
        if c.is_file():
            if not tarfile.is_tarfile(c):
                raise DatasetError(f"cifar10: {c} is not a tar archive; {expected}")
            with tarfile.open(c) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DatasetError(f"cifar10: {c} lacks {', '.join(missing)}; {expected}")
                return [_cifar10_batch(tar.extractfile(members[n]).read(), f"{c}:{n}") for n in names]
    looked = ", ".join(str(c) for c in candidates)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir())[:8]
        raise DatasetError(
            f"cifar10: looked in {looked}: no complete data set (the directory holds {found or 'nothing'}); {expected}"
        )
    raise DatasetError(f"cifar10: {path} does not exist; {expected}")


def _cifar10_batch(raw: bytes, where) -> tuple[np.ndarray, np.ndarray]:
    # The archive's batches are pickled dicts of numpy arrays and lists; that is the format.
    # Unpickled as plain data: a batch that names any other global is refused, never run.
    from parrbm._files import plain_data

    try:
        d = plain_data(raw, encoding="bytes")
        data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    except Exception as exc:  # noqa: BLE001 - any damage means: not a CIFAR-10 batch
        raise DatasetError(
            f"cifar10: {where} is not a CIFAR-10 python batch (a pickled dict with "
            f"b'data' and b'labels'): {type(exc).__name__}: {exc}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or labels.shape != (data.shape[0],):
        raise DatasetError(
            f"cifar10: {where}: b'data' must be uint8 of shape (n, 3072) with n labels, "
            f"got {data.dtype} {data.shape} and {labels.shape[0] if labels.ndim else 0} labels"
        )
    return data, labels


def load_npy(path: str | Path, labels: str | Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """X from a ``.npy`` file of shape (n_samples, n_features); y from ``labels`` if given."""
    X = _read_npy(Path(path), "data")
    if X.ndim != 2:
        raise DatasetError(f"{path}: the data must be 2-D (n_samples, n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DatasetError(f"{path}: the data must be real numbers, got dtype {X.dtype}")
    y = None
    if labels is not None:
        y = _read_npy(Path(labels), "labels")
        if y.shape != (X.shape[0],):
            raise DatasetError(f"{labels}: {X.shape[0]} labels expected (one per row of {path}), got shape {y.shape}")
        y = y.astype(np.int64)
    return X.astype(np.float64), y


def _read_npy(path: Path, what: str) -> np.ndarray:
    if path.suffix != ".npy":
        raise DatasetError(f"{path}: the {what} must be a .npy file")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    # opened here, not by numpy: np.load leaves its own file open when an archive is damaged
    with open(path, "rb") as fh:
        try:
            out = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{path}: not a readable .npy array ({exc})") from None
        if not isinstance(out, np.ndarray):  # an .npz archive behind a .npy name
            out.close()
            raise DatasetError(
                f"{path}: an .npz archive of several arrays, not one .npy array: save the {what} with numpy.save"
            )
    return out


def random_binary(n_samples: int, n_features: int, *, density: float = 0.5, seed: int = 0) -> tuple[np.ndarray, None]:
    """The paper's benchmark data: independent bits, each 1 with probability ``density``."""
    if n_samples < 1 or n_features < 1:
        raise DatasetError(f"random-binary: n_samples and n_features must be >= 1, got {n_samples}, {n_features}")
    if not 0.0 <= density <= 1.0:
        raise DatasetError(f"random-binary: density must be in [0, 1], got {density}")
    rng = np.random.default_rng(seed)
    return (rng.random((n_samples, n_features)) < density).astype(np.float64), None


DATASETS = ("digits", "nudged-digits", "cifar10", "npy", "random-binary")


def load(
    name: str,
    *,
    path: str | Path | None = None,
    labels: str | Path | None = None,
    subset: str = "train",
    n_samples: int = 1000,
    n_features: int = 784,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One entry point for the command line: ``name`` is one of :data:`DATASETS`."""
    if name == "digits":
        return load_digits()
    if name == "nudged-digits":
        return load_digits(nudged=True)
    if name == "cifar10":
        if path is None:
            raise DatasetError(
                f"cifar10: give the path of '{CIFAR10_ARCHIVE}' or of its folder "
                f"'{CIFAR10_FOLDER}' (parrbm does not download it)"
            )
        return load_cifar10(path, subset=subset)
    if name == "npy":
        if path is None:
            raise DatasetError("npy: give the path of a .npy file of shape (n_samples, n_features)")
        return load_npy(path, labels)
    if name == "random-binary":
        return random_binary(n_samples, n_features, seed=seed)
    raise DatasetError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
