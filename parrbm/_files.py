"""How parrbm writes files (a leaf module): every file it creates or replaces goes through
here, so that

* a reader sees the old file or the new one, never part of one: a new version is written
  to a temporary file beside it (created exclusively, never through a link), flushed and
  renamed over the old one; a write that fails (a full disk) removes the temporary file
  and leaves the old file as it was;
* a symbolic link planted where parrbm writes is never followed: a file parrbm appends to
  or locks is opened with ``O_NOFOLLOW``, and a rename replaces a link, not its target;
* a failure names the file (``OSError.filename``), so that "No space left on device" says
  which file was not written.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

#: the flags of a file parrbm opens to append to or to lock: never through a final link
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def write_atomic(
    path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], None], *, mode: int = 0o666
) -> None:
    """Replace ``path`` with ``content`` (bytes, text, or a function that writes to the
    open binary file) atomically; OSError names ``path`` if anything fails. The file gets
    ``mode`` less the umask, as a file that ``open`` creates does (the temporary file it is
    written through is private until then)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file parrbm can write", str(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write here ({exc.strerror})", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode() if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, (BrokenPipeError,)):
            raise OSError(
                exc.errno,
                f"{exc.strerror or exc}; the file was not written"
                + (" (the previous version is kept)" if path.exists() else ""),
                str(path),
            ) from None
        raise


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (OSError naming it)."""
    try:
        return os.open(path, flags | NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP,
                "is a symbolic link; parrbm does not write through a link planted where it writes",
                str(path),
            ) from None
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (setting it to
    read it back would race with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


class InUse(RuntimeError):
    """A folder another live process (or another fit in this one) holds."""


class FolderLock:
    """``with FolderLock(folder, what)``: this process's hold on ``folder`` for as long as
    the block runs (an advisory lock on ``folder/.parrbm.lock``, released when the block
    or the process ends; the file is removed on release); a second holder, here or in
    another process, gets :class:`InUse` naming the first."""

    def __init__(self, folder: str | os.PathLike, what: str):
        self.path = Path(folder) / ".parrbm.lock"
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        import fcntl

        for _ in range(10):
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise InUse(
                        f"{self.path.parent} is in use by {self.what}" + (f" ({holder})" if holder else "")
                    ) from None
                raise
            # the holder before us removes the file as it lets go: a lock on a removed
            # file holds nothing, so take the one at the path now
            try:
                here = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                here = None
            mine = os.fstat(fd)
            if here is not None and (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                break
            os.close(fd)
        else:
            raise InUse(f"{self.path.parent}: its lock file keeps changing; another process is using it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still held: the next holder makes a fresh one
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
        return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number in strict JSON")


def strict_json(text: str, *, max_depth: int = 16):
    """json.loads without NaN / Infinity literals (not JSON), nor nesting deeper than
    ``max_depth`` (the C parser's own recursion guard stops a pathological depth first)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            stack.extend((x, depth + 1) for x in (item.values() if isinstance(item, dict) else item))
    return value


class PlainData(pickle.Unpickler):
    """Unpickles plain data only: containers, numbers, strings, bytes, numpy arrays and
    scalars. Any other global (a function such as ``os.system``, a class that runs code
    as it is made) is refused before it is looked up, so that reading a pickle never runs
    code. ``what`` names the pickle in the refusal."""

    NUMPY = {("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "complex")} | {
        (f"numpy.{core}.{mod}", name)
        for core in ("core", "_core")
        for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    }
    what = "the pickle"

    def find_class(self, module: str, name: str):
        if (module, name) in self.NUMPY:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{self.what} carries {module}.{name}, which is not data")


def plain_data(payload: bytes, **options):
    """The plain data pickled in ``payload`` (:class:`PlainData`); ``options`` as for
    :class:`pickle.Unpickler` (``encoding="bytes"`` for Python 2's pickles)."""
    return PlainData(io.BytesIO(payload), **options).load()
