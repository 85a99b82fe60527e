import atexit
import os
import shutil
import tempfile

import pytest

# Tests measure correctness, not speed: one BLAS thread keeps them quiet on a shared box.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The calibrations the tests make are kept in a cache of the test run's own, not the user's
# (and none kept by the user's comparisons is read)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="parrbm-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)


def pytest_sessionstart(session):
    """Where the mpi transport must be tested (CI, or PARRBM_REQUIRE_MPI=1), a machine
    without it fails the run instead of skipping its tests."""
    from support import has_mpi

    required = os.environ.get("PARRBM_REQUIRE_MPI", "1" if os.environ.get("CI") else "0") == "1"
    if required and not has_mpi():
        raise pytest.UsageError(
            "the mpi transport is required here (CI or PARRBM_REQUIRE_MPI=1) but mpi4py "
            "or mpiexec is missing: pip install '.[mpi]'"
        )
