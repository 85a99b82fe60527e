"""A comparison started by the user's MPI launcher (``mpiexec -n N parrbm run CONFIG``):
the job's world, and what rank 0 and the serving ranks do together."""

from __future__ import annotations


def job_world():
    """(rank, size) when this comparison runs on the ranks of an MPI job, else None."""
    from parrbm.harness.world import spmd_world

    return spmd_world()


def job_kind() -> str | None:
    """How the job's ranks talk: "mpi", "tcp" (a launcher without MPI), or None."""
    from parrbm.harness.world import world_kind

    return world_kind()


def job_comm():
    """The job's world (MPI's, or the TCP world of a launcher without MPI)."""
    from parrbm.harness.world import launcher_world

    return launcher_world()


def release_servers() -> None:
    """Rank 0, when the comparison stops before it began: the other ranks leave."""
    if job_world() is not None:
        job_comm().bcast(None, root=0)


#: the transports whose points run on the ranks of the user's job (tcp: over connections
#: between the ranks, set up over MPI)
JOB_TRANSPORTS = ("mpi", "tcp")


def on_the_job(pt: dict) -> bool:
    return job_world() is not None and pt["transport"] in JOB_TRANSPORTS


def watch_point(cfg: dict, pt: dict) -> None:
    """Every rank of the job: the watch's books for this point start now, before its data
    go round (a rank stopped there is named as one stopped inside the fit)."""
    from parrbm.harness.mpi import Watch

    Watch.of(job_comm()).start_fit(pt["workers"], cfg["training"]["timeout"], ahead=True)


def job_bcast(value):
    from parrbm.harness.mpi import Watch

    return Watch.of(job_comm()).books(job_comm().bcast, value, 0)
