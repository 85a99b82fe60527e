"""The fault-injection hook of the harness's own tests.

PARRBM_FAULT=kill:R:S, hang:R:S or stop:R:S makes worker R kill itself, hang or stop
itself with SIGSTOP at the start of step S; stop-in:R:S stops it inside the first
collective of step S (after it has told the launcher it entered it); slow:R:MS makes
worker R sleep MS milliseconds before every step (on threads too).
"""

from __future__ import annotations

import os
import signal
import time

FAULT_FORMS = (
    "kill:R:S, hang:R:S, stop:R:S or stop-in:R:S (worker R at step S, integers >= 0), "
    "or slow:R:MS (worker R sleeps MS >= 0 milliseconds before every step)"
)


def fault_spec() -> tuple[str, int, float] | None:
    """PARRBM_FAULT as (kind, rank, step or milliseconds), or None when unset; ValueError
    naming the variable and the accepted forms when it is malformed (checked by the
    launcher before any worker starts)."""
    spec = os.environ.get("PARRBM_FAULT")
    if not spec:
        return None
    parts = spec.split(":")
    bad = ValueError(f"PARRBM_FAULT={spec!r:.80} is malformed; accepted: {FAULT_FORMS}")
    if len(parts) != 3 or parts[0] not in ("kill", "hang", "stop", "stop-in", "slow"):
        raise bad
    try:
        rank = int(parts[1])
        value = float(parts[2]) if parts[0] == "slow" else int(parts[2])
    except ValueError:
        raise bad from None
    if rank < 0 or not (0 <= value < float("inf")):
        raise bad
    return parts[0], rank, value


def fault_hook(rank: int, transport):
    """The PARRBM_FAULT hook of worker ``rank`` (whose transport ``transport`` is, for
    stop-in): a function of the step index, or None."""
    spec = fault_spec()
    if spec is None:
        return None
    what, r, s = spec
    if r != rank:
        return None

    if what == "slow":
        return slow_hook(rank)

    def fault(i: int) -> None:
        if i == int(s):
            if what == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if what == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
            if what == "stop-in":
                _stop_inside_next_collective(transport)
            while what == "hang":
                time.sleep(1)

    return fault


def slow_hook(rank: int):
    """PARRBM_FAULT=slow:R:MS: worker R sleeps MS milliseconds before every step (a
    straggler, whose peers then wait for it), or None for other workers and faults."""
    spec = fault_spec()
    if spec is None or spec[0] != "slow" or spec[1] != rank:
        return None
    seconds = spec[2] / 1e3

    def slow(i: int) -> None:
        time.sleep(seconds)

    return slow


def inject_fault(worker, fault) -> None:
    """The fault runs at the start of ``worker.step``."""
    if fault is None:
        return
    step = worker.step

    def faulty(X, i):
        fault(i)
        return step(X, i)

    worker.step = faulty


def _stop_inside_next_collective(transport) -> None:
    for name in ("exchange", "share", "barrier"):
        if not hasattr(transport, name):
            continue
        inner = getattr(transport, name)

        def entered(*a, _inner=inner):
            if hasattr(transport, "_heartbeat"):
                transport._heartbeat()  # the launcher sees it inside the collective
                transport._heartbeat = lambda: None
            os.kill(os.getpid(), signal.SIGSTOP)
            return _inner(*a)

        setattr(transport, name, entered)
