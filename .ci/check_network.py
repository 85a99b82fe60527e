"""CI: the emulated link really holds the comm-bound strategy back (never faster than its
bytes over the link), and far more than the one-bit exchange (reads
results/network-smoke.jsonl)."""

import json
import sys

from parrbm.harness.network import payload_rate

records = [json.loads(line) for line in open(sys.argv[1])]
step = {(r["strategy"], r["transport"], r["bandwidth"]): r["metrics"] for r in records if r["workers"] == 2}
failures = []
for transport in ("tcp", "mpi"):
    pa, pa_free = (
        step[("parameter-averaging", transport, "20MB/s")],
        step[("parameter-averaging", transport, "unshaped")],
    )
    floor = pa["bytes_per_step"] / 2 / payload_rate(20e6)  # each worker's bytes over its own link
    if not pa["step_seconds"]["median"] >= 0.95 * floor:
        failures.append(
            f"{transport}: parameter averaging took {pa['step_seconds']['median']:.4f} s a step at "
            f"20 MB/s, below its bytes' time on the link ({floor:.4f} s)"
        )
    if not pa["step_seconds"]["median"] > 3 * pa_free["step_seconds"]["median"]:
        failures.append(f"{transport}: parameter averaging is not slowed by the 20 MB/s link")
    up, up_free = step[("unit-partitioned", transport, "20MB/s")], step[("unit-partitioned", transport, "unshaped")]
    # relative, not absolute: a shared machine's noise moves a 6-step median of a few ms
    slowed = {
        "parameter averaging": pa["step_seconds"]["median"] / pa_free["step_seconds"]["median"],
        "unit-partitioned": up["step_seconds"]["median"] / up_free["step_seconds"]["median"],
    }
    if not slowed["parameter averaging"] > 3 * slowed["unit-partitioned"]:
        failures.append(
            f"{transport}: the link slows parameter averaging {slowed['parameter averaging']:.1f}x, "
            f"the one-bit exchange {slowed['unit-partitioned']:.1f}x: not the regime the paper describes"
        )
    print(
        f"{transport}: parameter averaging {pa['step_seconds']['median'] * 1e3:.1f} ms a step at 20 MB/s "
        f"(its bytes alone {floor * 1e3:.1f} ms), {pa_free['step_seconds']['median'] * 1e3:.1f} ms unshaped; "
        f"unit-partitioned {up['step_seconds']['median'] * 1e3:.1f} / {up_free['step_seconds']['median'] * 1e3:.1f} ms"
    )
if failures:
    sys.exit("network check failed:\n  " + "\n  ".join(failures))
