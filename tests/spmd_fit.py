"""Run by tests/test_spmd.py under ``mpiexec -n N``: every rank fits the same models with
transport="mpi" (the fit runs on the job's ranks) and saves what it holds."""

import json
import sys

import numpy as np
from mpi4py import MPI

from parrbm import DBN, RBM
from parrbm.strategies import PARALLEL_STRATEGIES

out, K = sys.argv[1], int(sys.argv[2])
rank = MPI.COMM_WORLD.Get_rank()
X = (np.random.default_rng(3).random((120, 20)) < 0.4).astype(np.float64)
held = {}
for strategy in PARALLEL_STRATEGIES:
    rbm = RBM(
        n_hidden=12,
        batch_size=10,
        n_iter=2,
        learning_rate=0.05,
        dtype="float64",
        random_state=1,
        strategy=strategy,
        workers=K,
        transport="mpi",
        progress=False,
    ).fit(X)
    held[strategy] = rbm.components_
    held[f"{strategy}/bytes"] = np.array([rbm.comm_stats_["bytes_total"], rbm.comm_stats_["bytes_per_step"]])
unseeded = RBM(
    n_hidden=6, batch_size=10, n_iter=1, strategy="green-only", workers=K, transport="mpi", progress=False
).fit(X)
held["unseeded"] = unseeded.components_
dbn = DBN(
    hidden_layer_sizes=(10, 6),
    n_iter=1,
    batch_size=10,
    random_state=2,
    strategy="purple-only",
    workers=K,
    transport="mpi",
    dtype="float64",
    progress=False,
).fit(X)
held["dbn"] = dbn.transform(X)
np.savez(f"{out}-{rank}.npz", **held)
with open(f"{out}-{rank}.json", "w") as fh:
    json.dump({"rank": rank}, fh)
