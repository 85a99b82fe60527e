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
    data = read_input(path, "a results file", ResultsError)
    out = ResultsFile(path)
    lines = data.split(b"\n")
    offset = 0
    for n, raw in enumerate(lines, 1):
        # only a last line without its newline can be a write cut short
        last = n == len(lines)
        end = offset + len(raw) + (1 if n < len(lines) else 0)
        if raw.strip():
            problem = _problem(raw)
            if problem is not None:
                if last:
                    out.torn, out.torn_line = raw, n
                    return out
                raise ResultsError(f"{path}: line {n} is not a parrbm record ({problem}); the file is "
                                   f"damaged or not a results file of 'parrbm run'")
            out.records.append(json.loads(raw))
        out.good_bytes = end
        offset = end
    return out


def read_input(path: Path, what: str, error: type[Exception]) -> bytes:
    """The bytes of an input file, or ``error`` naming the file and why it cannot be read."""
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _problem(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return f"not JSON: {getattr(exc, 'msg', exc)}"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    return None


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
    with open(rf.path, "r+b") as fh:
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

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.fh.seek(0)
            who = self.fh.read().strip()
            self.fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ResultsError(f"{self.results}: another 'parrbm run' is writing it"
                                   + (f" (process {who})" if who else "")
                                   + "; wait for it, or give another --out") from None
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
            raise ResultsError(f"{self.results}: its folder was removed, or its lock file {self.path.name} "
                               f"replaced, while this run was writing it; the run stopped so that its records "
                               f"do not mix with another run's")


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
    line = (json.dumps(finite_record(record), allow_nan=False) + "\n").encode()
    if lock is not None:
        lock.check()
    with signals_held(), open(path, "ab") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


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
                    raise ResultsError(f"{path}: run {key} is recorded under two different experiments "
                                       f"({'; '.join(diff[:4])}): the file mixes experiments")
        ok = [r for r in rs if r.get("status", "ok") == "ok"]
        pick = ok[-1] if ok else rs[-1]
        out.append(pick)
        if len(ok) > 1:
            notes.append(f"run {key} is recorded {len(ok)} times; shown once (the last record)")
    return out, notes
