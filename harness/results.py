"""The results file of a comparison: one JSON object per line, appended whole and fsync'd.

What this module guarantees, so that recorded results are never lost or mixed:

* a results file is never deleted or replaced implicitly: ``parrbm run`` refuses an
  existing one unless told ``--resume`` (continue it) or ``--overwrite`` (start afresh;
  the old file is set aside beside it, never deleted);
* a torn last line (a write cut short by a kill or a full disk) is set aside in a side
  file, and the good records before it are kept;
* every record carries its experiment's *identity* (the resolved model, data, training
  and options): ``--resume`` refuses a file written under another configuration and names
  the fields that differ;
* one writer at a time: a second ``parrbm run`` on the same file is refused;
* no record holds NaN or infinity (not valid JSON): such a value is written as null and
  the reason is kept in the record's ``nulls``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from parrbm.harness.signals import signals_held


class ResultsError(ValueError):
    """A results file that cannot be read or used as asked, with the file and the reason."""


@dataclass
class ResultsFile:
    """What a results file holds.

    records : the good records, in file order
    torn : the bytes of an incomplete last line (None if the file ends cleanly)
    good_bytes : the length of the file up to the end of its last good line
    torn_line : the line number of the torn line
    """

    path: Path
    records: list[dict] = field(default_factory=list)
    torn: bytes | None = None
    good_bytes: int = 0
    torn_line: int = 0


def scan(path: str | Path) -> ResultsFile:
    """Read a results file. A line that is not a JSON object names the file and line; the
    last line alone may be torn (reported in ``torn``, not raised)."""
    path = Path(path)
    lines = _read_lines(path)
    out = ResultsFile(path)
    offset = 0
    for n, raw in enumerate(lines, 1):
        # only a last line without its newline can be a write cut short
        last = n == len(lines)
        end = offset + len(raw) + (1 if n < len(lines) else 0)
        if raw.strip():
            record, problem = _parse(raw)
            if problem is not None:
                if last:
                    out.torn, out.torn_line = raw, n
                    return out
                raise ResultsError(
                    f"{path}: line {n} is not a parrbm record ({problem}); the file is "
                    f"damaged or not a results file of 'parrbm run'"
                )
            out.records.append(record)
        out.good_bytes = end
        offset = end
    return out


#: the largest results file read (some 50,000 records)
MAX_RESULTS_BYTES = 1 << 28


def _read_lines(path: Path) -> list[bytes]:
    """The lines of a results file (without their newlines; the last one is what follows
    the last newline), each at most MAX_LINE bytes and the file at most MAX_RESULTS_BYTES:
    a device or a huge file is refused, not read until memory runs out."""
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise ResultsError(f"{path}: is a directory, not a results file") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines, total = [], 0
    with fh:
        while True:
            try:
                raw = fh.readline(MAX_LINE + 1)
            except IsADirectoryError:
                raise ResultsError(f"{path}: is a directory, not a results file") from None
            except OSError as exc:
                raise ResultsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
            total += len(raw)
            if len(raw) > MAX_LINE:
                raise ResultsError(
                    f"{path}: line {len(lines) + 1} is longer than {MAX_LINE >> 20} MiB: not a "
                    f"results file of 'parrbm run'"
                )
            if total > MAX_RESULTS_BYTES:
                raise ResultsError(
                    f"{path}: larger than {MAX_RESULTS_BYTES >> 20} MiB: not a results file of 'parrbm run'"
                )
            if not raw.endswith(b"\n"):
                lines.append(raw)
                return lines
            lines.append(raw[:-1])


def read_input(path: Path, what: str, error: type[Exception], limit: int = 1 << 24) -> bytes:
    """The bytes of an input file (at most ``limit``), or ``error`` naming the file and why
    it cannot be read."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise error(f"{path}: larger than {limit >> 20} MiB: not {what}")
    return data


def _parse(raw: bytes) -> tuple[dict | None, str | None]:
    """(the record of a line, None), or (None, why the line is not one)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    try:
        value = _strict_json(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        return None, f"not JSON: {getattr(exc, 'msg', exc)}"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, None


#: the longest line a results file may hold (a record is a few kB; a line beyond this is
#: not a record, and reading on would hold it all in memory)
MAX_LINE = 1 << 22
#: the deepest nesting a record may have (a record nests 3 deep)
MAX_DEPTH = 16


def _strict_json(text: str):
    from parrbm._files import strict_json

    return strict_json(text, max_depth=MAX_DEPTH)


# ---- what a record is ---------------------------------------------------------------------

TRANSPORT_NAMES = (None, "threads", "tcp", "mpi")
STATUSES = ("ok", "error")
_METRIC_NUMBERS = (
    "bytes_per_step",
    "bytes_per_sync",
    "compute_seconds",
    "comm_seconds",
    "wait_seconds",
    "cases_per_second",
)
_METRIC_OPTIONAL = (
    "speedup_vs_serial",
    "speedup_vs_serial_all_cores",
    "speedup_vs_k1",
    "efficiency",
    "bytes_per_step_formula",
    "bytes_per_sync_formula",
    "wire_bytes_per_step",
    "replica_divergence",
    "reconstruction_error",
)


def _number(x) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x)) and abs(float(x)) < 1e300
    except OverflowError:
        return False


def _count(x, minimum: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and minimum <= x < 2**63


def record_problem(rec: dict) -> str | None:
    """Why ``rec`` is not a record that ``parrbm run`` writes (None if it is one): its run
    fields, their agreement with its run_id, its model and, for a finished run, its metrics."""
    if not isinstance(rec.get("strategy"), str) or not rec["strategy"]:
        return f"strategy must be a name, got {rec.get('strategy')!r:.60}"
    if rec.get("strategy_name") is not None and not isinstance(rec["strategy_name"], str):
        return f"strategy_name must be a string, got {rec['strategy_name']!r:.60}"
    if not _count(rec.get("workers"), 1):
        return f"workers must be an integer >= 1, got {rec.get('workers')!r:.60}"
    if rec.get("transport") not in TRANSPORT_NAMES:
        return f"transport must be one of threads, tcp, mpi or null, got {rec.get('transport')!r:.60}"
    if not _count(rec.get("batch_size"), 1):
        return f"batch_size must be an integer >= 1, got {rec.get('batch_size')!r:.60}"
    status = rec.get("status", "ok")
    if status not in STATUSES:
        return f"status must be 'ok' or 'error', got {status!r:.60}"
    if not isinstance(rec.get("run_id"), str):
        return f"run_id must be a string, got {rec.get('run_id')!r:.60}"
    fields = dict(part.split("=", 1) for part in rec["run_id"].split("|") if "=" in part)
    for key in ("strategy", "workers", "transport", "batch_size"):
        if key in fields and fields[key] != str(rec.get(key)):
            return f"its {key} {rec.get(key)!r:.60} is not its run_id's ({fields[key]!r:.60})"
    if rec.get("bandwidth") is not None and not isinstance(rec["bandwidth"], str):
        return f"bandwidth must be a string like '105MB/s' or null, got {rec['bandwidth']!r:.60}"
    if "bandwidth" in fields and fields["bandwidth"] != str(rec.get("bandwidth")):
        return f"its bandwidth {rec.get('bandwidth')!r:.60} is not its run_id's ({fields['bandwidth']!r:.60})"
    if rec.get("identity") is not None and not isinstance(rec["identity"], dict):
        return "identity must be an object"
    if status != "ok":
        return None
    model = rec.get("model")
    if (
        not isinstance(model, dict)
        or not _count(model.get("visible"), 1)
        or not _count(model.get("hidden"), 1)
        or model.get("visible_type") not in ("binary", "gaussian")
        or model.get("precision") not in ("float32", "float64")
    ):
        return "model must give visible, hidden (integers >= 1), visible_type and precision"
    for key in ("precision", "visible_type"):
        if key in fields and fields[key] != model[key]:
            return f"its model.{key} {model[key]!r} is not its run_id's ({fields[key]!r})"
    if rec.get("network") is not None and not isinstance(rec["network"], dict):
        return f"network must be an object or null, got {rec['network']!r:.60}"
    for key in ("training", "options"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            return f"{key} must be an object"
    mt = rec.get("metrics")
    if not isinstance(mt, dict):
        return "a finished run's metrics must be an object"
    for key in _METRIC_NUMBERS:
        if not _number(mt.get(key)) or mt[key] < 0:
            return f"metrics.{key} must be a number >= 0, got {mt.get(key)!r:.60}"
    for key in _METRIC_OPTIONAL:
        if mt.get(key) is not None and not _number(mt[key]):
            return f"metrics.{key} must be a number or null, got {mt[key]!r:.60}"
    st = mt.get("step_seconds")
    if not isinstance(st, dict) or not all(_number(st.get(k)) and st[k] > 0 for k in ("median", "p10", "p90")):
        return "metrics.step_seconds must give median, p10 and p90 (seconds > 0)"
    return None


def file_identity(records: list[dict]) -> tuple[str | None, dict | None]:
    """(config name, experiment identity) of a results file: those of its first record."""
    for r in records:
        return r.get("config"), r.get("identity")
    return None, None


def set_aside(path: Path, why: str) -> Path:
    """Rename ``path`` to ``<name>.<why>-<UTC time>`` beside it (never over another file)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for i in range(1000):
        target = path.with_name(f"{path.name}.{why}-{stamp}" + (f"-{i}" if i else ""))
        if not target.exists():
            os.rename(path, target)
            return target
    raise ResultsError(f"{path}: could not find a free name to set it aside")


def set_aside_torn(rf: ResultsFile) -> Path:
    """Move a torn last line into a side file and cut it off the results file."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    side = rf.path.with_name(f"{rf.path.name}.torn-{stamp}")
    i = 0
    while side.exists():
        i += 1
        side = rf.path.with_name(f"{rf.path.name}.torn-{stamp}-{i}")
    with open(side, "xb") as fh:
        fh.write(rf.torn or b"")
        fh.flush()
        os.fsync(fh.fileno())
    from parrbm._files import open_nofollow

    with os.fdopen(open_nofollow(rf.path, os.O_RDWR), "r+b") as fh:
        fh.truncate(rf.good_bytes)
        fh.flush()
        os.fsync(fh.fileno())
    return side


# ---- one writer at a time -----------------------------------------------------------------------


class WriterLock:
    """``with WriterLock(results)``: refuse a second writer of the same results file
    (an advisory lock on ``.<name>.lock`` beside it, released when the process ends)."""

    def __init__(self, results: Path):
        self.path = results.with_name(f".{results.name}.lock")
        self.results = results
        self.fh = None

    def __enter__(self):
        import fcntl

        from parrbm._files import open_nofollow

        self.fh = os.fdopen(open_nofollow(self.path, os.O_RDWR | os.O_CREAT), "r+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.fh.seek(0)
            who = self.fh.read().strip()
            self.fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ResultsError(
                    f"{self.results}: another 'parrbm run' is writing it"
                    + (f" (process {who})" if who else "")
                    + "; wait for it, or give another --out"
                ) from None
            raise
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()
        return False

    def check(self) -> None:
        """ResultsError unless the lock file at the path is still this lock's: a results
        folder removed under a running experiment (or its lock file replaced) lets another
        run take the same path, and writing on would mix the two runs' records."""
        try:
            here = os.stat(self.path)
        except OSError:
            here = None
        mine = os.fstat(self.fh.fileno())
        if here is None or (here.st_ino, here.st_dev) != (mine.st_ino, mine.st_dev):
            raise ResultsError(
                f"{self.results}: its folder was removed, or its lock file {self.path.name} "
                f"replaced, while this run was writing it; the run stopped so that its records "
                f"do not mix with another run's"
            )


# ---- records ---------------------------------------------------------------------------------


def finite_record(record: dict) -> dict:
    """The record with every NaN / infinity replaced by null, and ``nulls`` saying which
    fields and why (strict JSON has no NaN)."""
    nulls: dict[str, str] = dict(record.get("nulls") or {})

    def clean(x, where):
        if isinstance(x, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (float, np.floating)):
            if not math.isfinite(float(x)):
                nulls[where] = f"not a finite number ({float(x)}): the run produced it (diverged training?)"
                return None
            return float(x)
        if isinstance(x, np.ndarray):
            return clean(x.tolist(), where)
        return x

    out = clean(record, "")
    if nulls:
        out["nulls"] = nulls
    return out


def append_record(path: Path, record: dict, lock: "WriterLock | None" = None) -> None:
    """One whole line of strict JSON, flushed and fsync'd, with Ctrl-C and SIGTERM held
    off while it is written; with the writer's ``lock``, only while it still holds the path."""
    from parrbm._files import open_nofollow

    line = (json.dumps(finite_record(record), allow_nan=False) + "\n").encode()
    if lock is not None:
        lock.check()
    with signals_held(), os.fdopen(open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT), "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        # a file whose last line lacks its newline (an editor, a copy) gets one first
        if size and os.pread(fh.fileno(), 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:
            # a part-written line is cut off again: the file keeps its whole records
            try:
                os.ftruncate(fh.fileno(), size)
            except OSError:
                pass
            raise OSError(
                exc.errno,
                f"{exc.strerror or exc}; the record was not written (the results already recorded are kept)",
                str(path),
            ) from None


# ---- identity ------------------------------------------------------------------------------


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def flatten(d, prefix: str = "") -> dict[str, object]:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def identity_diff(recorded: dict | None, current: dict) -> list[str]:
    """The fields in which two experiment identities differ, as 'field: recorded -> now'."""
    if recorded is None:
        return ["(the record has no experiment identity: it was written by an older parrbm)"]
    a, b = flatten(recorded), flatten(current)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "(unset)") != b.get(k, "(unset)"):
            out.append(f"{k}: {a.get(k, '(unset)')!r} in the file, {b.get(k, '(unset)')!r} now")
    return out


def one_per_run(records: list[dict], path: Path | str) -> tuple[list[dict], list[str]]:
    """Each run once: of a run's several records the last successful one (or the last
    failure, if it never succeeded), with a note for each run recorded more than once.
    Records of one run under different experiment identities are an error (two
    experiments mixed in one file)."""
    by_run: dict[str, list[dict]] = {}
    order: list = []
    for i, r in enumerate(records):
        rid = r.get("run_id")
        key = rid if rid is not None else ("#", i)
        if key not in by_run:
            order.append(key)
        by_run.setdefault(key, []).append(r)
    out, notes = [], []
    for key in order:
        rs = by_run[key]
        if len(rs) > 1:
            idents = [r.get("identity") for r in rs]
            for other in idents[1:]:
                diff = identity_diff(idents[0], other) if other != idents[0] else []
                if diff:
                    raise ResultsError(
                        f"{path}: run {key} is recorded under two different experiments "
                        f"({'; '.join(diff[:4])}): the file mixes experiments"
                    )
        ok = [r for r in rs if r.get("status", "ok") == "ok"]
        pick = ok[-1] if ok else rs[-1]
        out.append(pick)
        if len(ok) > 1:
            notes.append(f"run {key} is recorded {len(ok)} times; shown once (the last record)")
    return out, notes


def profile_path(results: str | Path) -> Path:
    """Where ``parrbm run`` keeps the machine profile it calibrated for a results file."""
    results = Path(results)
    return results.with_name(results.stem + ".profile.json")
