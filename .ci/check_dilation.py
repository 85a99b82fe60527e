"""CI: K = 4 and 8 emulated machines on this machine's cores (reads
results/dilation-smoke.jsonl): every run dilated as 'auto' makes it (K / cores), its hosts
capped and its links slowed by the factor, and its bytes equal to the closed form."""

import json
import os
import sys

records = [json.loads(line) for line in open(sys.argv[1])]
cores = len(os.sched_getaffinity(0))
failures = []
runs = [r for r in records if r["workers"] > 1]
if len(runs) != 10:
    failures.append(f"expected 10 runs at K = 4 and 8 (five strategies), found {len(runs)}")
for r in runs:
    name = f"{r['strategy']} K={r['workers']}"
    if r["status"] != "ok":
        failures.append(f"{name}: {r['error']}")
        continue
    want = max(1.0, r["workers"] / cores)
    net, mt = r["network"] or {}, r["metrics"]
    if r["time_dilation"] != want or net.get("time_dilation") != want:
        failures.append(f"{name}: dilated {r['time_dilation']}, 'auto' makes {want:g} on {cores} cores")
    cap = net.get("cpu_cap") or {}
    if want > 1 and abs(cap.get("cores", 0) - 1 / want) > 1e-9:
        failures.append(f"{name}: each host capped to {cap.get('cores')} cores, not 1/{want:g}")
    if want > 1 and abs(net.get("shaped_bandwidth", 0) - 105e6 / want) > 1:
        failures.append(f"{name}: links shaped to {net.get('shaped_bandwidth')} B/s, not 105 MB/s / {want:g}")
    if mt["formula_mismatch"] or mt["bytes_per_step"] != mt["bytes_per_step_formula"]:
        failures.append(f"{name}: bytes {mt['bytes_per_step']} against the closed form {mt['bytes_per_step_formula']}")
    if not mt["speedup_meaningful"]:
        failures.append(f"{name}: a dilated run on {cores} cores is marked not meaningful")
    print(
        f"{name}: dilated x{r['time_dilation']:g}, {mt['bytes_per_step']} bytes a step (closed form "
        f"{mt['bytes_per_step_formula']}), {mt['step_seconds']['median'] * 1e3:.1f} ms a step "
        f"({mt['measured_step_seconds']['median'] * 1e3:.1f} ms as measured)"
    )
if failures:
    sys.exit("dilation check failed:\n  " + "\n  ".join(failures))
