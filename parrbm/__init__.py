"""parrbm: Restricted Boltzmann Machines trained with interchangeable parallelization
strategies, compared with exact communication accounting."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("parrbm")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

from parrbm.rbm import RBM  # noqa: E402

__all__ = ["RBM", "__version__"]
