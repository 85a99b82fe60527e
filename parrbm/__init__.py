"""parrbm: Restricted Boltzmann Machines trained with interchangeable parallelization
strategies, compared with exact communication accounting."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("parrbm")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["DBN", "RBM", "DivergenceError", "latest_checkpoint", "__version__"]


def __getattr__(name):
    # Imported on first use: worker processes of the tcp and mpi transports start
    # without loading scikit-learn.
    if name in ("RBM", "DivergenceError", "latest_checkpoint"):
        from parrbm import rbm

        return getattr(rbm, name)
    if name == "DBN":
        from parrbm.dbn import DBN

        return DBN
    raise AttributeError(f"module 'parrbm' has no attribute {name!r}")
