"""What several test modules share: whether this machine can run the mpi transport."""

import functools

import pytest


@functools.lru_cache(maxsize=None)
def has_mpi() -> bool:
    """mpi4py imports and an mpiexec is found (pip install '.[mpi]')."""
    try:
        import mpi4py  # noqa: F401

        from parrbm.harness.launch import mpiexec

        mpiexec()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no mpi here
        return False


def needs_mpi(*values):
    """A parameter set that runs the mpi transport, skipped where mpi is missing."""
    return pytest.param(*values, marks=pytest.mark.skipif(not has_mpi(), reason="pip install '.[mpi]'"))


def mpi_param():
    """The "mpi" transport as a test parameter, skipped where mpi is missing."""
    return needs_mpi("mpi")


def sigint_default() -> None:
    """preexec_fn for a child that a test interrupts: Ctrl-C back at its default. A shell
    starts background jobs with SIGINT ignored, and the child would inherit that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
