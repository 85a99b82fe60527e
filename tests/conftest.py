import os

import pytest

# Tests measure correctness, not speed: one BLAS thread keeps them quiet on a shared box.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def pytest_sessionstart(session):
    """Where the mpi transport must be tested (CI, or PARRBM_REQUIRE_MPI=1), a machine
    without it fails the run instead of skipping its tests."""
    from support import has_mpi

    required = os.environ.get("PARRBM_REQUIRE_MPI", "1" if os.environ.get("CI") else "0") == "1"
    if required and not has_mpi():
        raise pytest.UsageError("the mpi transport is required here (CI or PARRBM_REQUIRE_MPI=1) but mpi4py "
                                "or mpiexec is missing: pip install '.[mpi]'")
