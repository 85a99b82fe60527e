"""CI: a comparison across the emulated cluster's hosts (started by the user's mpiexec,
or by parrbm on the hosts of its mpi and tcp sections) trained, at every tcp or mpi
point, the model its threads point trained (bit for bit), moved the closed form's bytes,
and ran one worker a host (reads the results file it is given)."""

import json
import sys

records = [json.loads(line) for line in open(sys.argv[1])]
threads = {(r["strategy"], r["workers"]): r["metrics"] for r in records if r["transport"] == "threads"}
mpi = [r for r in records if r["transport"] in ("tcp", "mpi")]
failures = []
kinds = sorted({r["transport"] for r in mpi})
if not kinds or len(mpi) != 10 * len(kinds):
    failures.append(f"{len(mpi)} tcp and mpi records ({kinds}), 10 a transport expected")
for r in mpi:
    m, ref = r["metrics"], threads.get((r["strategy"], r["workers"]))
    if r["status"] != "ok":
        failures.append(f"{r['run_id']}: {r.get('error')}")
        continue
    if ref is None or m["model_sha256"] != ref["model_sha256"]:
        failures.append(f"{r['run_id']}: its model is not the threads run's")
    if not m["bytes_per_step"] == m["bytes_per_step_formula"] == (ref or {}).get("bytes_per_step"):
        failures.append(f"{r['run_id']}: {m['bytes_per_step']} bytes a step, closed form {m['bytes_per_step_formula']}")
    if r.get("hosts") != [f"node{k}" for k in range(r["workers"])]:
        failures.append(f"{r['run_id']}: ran on {r.get('hosts')}")
for f in failures:
    print("FAIL", f)
print(
    f"cluster: {len(mpi)} {' and '.join(kinds)} points across emulated hosts, each the threads model bit for "
    f"bit, bytes the closed form's"
    if not failures
    else ""
)
sys.exit(1 if failures else 0)
