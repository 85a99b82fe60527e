"""The world of a job the user's launcher started: N copies of one command, each finding
its rank and the world size in its environment.

- An MPI launcher (``mpiexec``, ``srun --mpi=pmi2``; its ranks carry PMI_*, PMIX_* or
  OMPI_COMM_WORLD_*): MPI's own world (mpi4py).
- Slurm without an MPI plug-in (``srun -n N``, tasks with SLURM_PROCID and
  SLURM_STEP_NUM_TASKS), or a torchrun-style launcher (RANK, WORLD_SIZE, MASTER_ADDR,
  MASTER_PORT), or PMI_RANK/PMI_SIZE where mpi4py is not installed: a :class:`TCPWorld`.
  The ranks meet at rank 0's rendezvous, MASTER_ADDR:MASTER_PORT, as torchrun's do; under
  Slurm these default to the step's first host and a port made from the job and step ids.

Either way the world offers the few collectives that keep a job's books (``bcast`` from
rank 0, ``allgather``, ``gather`` to rank 0, ``Barrier``) and ``Abort``, which ends every
rank at once. The workers' own collectives do not go through it.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import io
import os
import pickle
import queue
import socket
import struct
import sys
import threading
import time

from parrbm._files import PlainData

#: the variables an MPI launcher sets in every rank it starts (hydra and PMI-2/PMIx: PMI_*;
#: Open MPI: OMPI_COMM_WORLD_*)
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")

_world = None  # the process's world, once made
_world_kind = None  # "mpi" or "tcp"


def spmd_world() -> tuple[int, int] | None:
    """(rank, size) of the job this process is one of N > 1 ranks of, when the user's
    launcher started it so (see the module's docstring); else None. parrbm's own mpi
    workers on other hosts are such ranks too (PARRBM_SPMD), but never build a trainer.
    ValueError naming the variables when the environment says "one of N" but not how
    the ranks are to meet."""
    world = launcher_world()
    return None if world is None else (world.Get_rank(), world.Get_size())


def launcher_world():
    """The world of :func:`spmd_world` (MPI.COMM_WORLD or a :class:`TCPWorld`), or None."""
    global _world, _world_kind
    if _world is not None:
        return _world
    mpi = _mpi_size()
    if mpi is not None:
        try:
            from mpi4py import MPI
        except ImportError:
            if not os.environ.get("MASTER_ADDR"):
                raise ValueError(
                    f"this process is one of {mpi[1]} ranks of an MPI job ({mpi[0]}), but mpi4py is "
                    f"not installed here: pip install 'parrbm[mpi]', or set MASTER_ADDR and "
                    f"MASTER_PORT for a rendezvous over TCP"
                ) from None
        else:
            from parrbm.harness.mpi import remove_topology_file_after_proxy

            remove_topology_file_after_proxy()
            _world, _world_kind = MPI.COMM_WORLD, "mpi"
            return _world
    place = _tcp_place()
    if place is None:
        return None
    _world, _world_kind = TCPWorld(*place), "tcp"
    return _world


def world_kind() -> str | None:
    """ "mpi" or "tcp": how the ranks of this job talk, or None outside a launcher's job."""
    launcher_world()
    return _world_kind


def _mpi_size() -> tuple[str, int] | None:
    for var in _WORLD_SIZE_VARS:
        value = os.environ.get(var, "")
        # PARRBM_SPMD: parrbm's own ranks on other hosts (harness.remote), one rank too
        if value.isdigit() and (int(value) > 1 or (int(value) == 1 and os.environ.get("PARRBM_SPMD") == "1")):
            return var, int(value)
    return None


def _int_var(name: str) -> int:
    value = os.environ.get(name, "")
    if not value.strip().isdigit():
        raise ValueError(f"{name}={value!r:.40}: a whole number >= 0 was expected")
    return int(value)


def _tcp_place() -> tuple[int, int, str, int, bytes, str] | None:
    """(rank, size, rendezvous host, port, secret, launcher) when a launcher without MPI
    started this process as one of N > 1 ranks; else None."""
    env = os.environ
    if env.get("SLURM_PROCID") is not None and env.get("SLURM_STEP_NUM_TASKS") is not None:
        launcher, rank_var, size_var = "srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"
    elif env.get("PMI_RANK") is not None and env.get("PMI_SIZE") is not None:
        launcher, rank_var, size_var = "a PMI launcher", "PMI_RANK", "PMI_SIZE"
    elif all(env.get(v) is not None for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        launcher, rank_var, size_var = "a torchrun-style launcher", "RANK", "WORLD_SIZE"
    else:
        return None
    rank, size = _int_var(rank_var), _int_var(size_var)
    if size <= 1:
        return None
    if rank >= size:
        raise ValueError(f"{rank_var}={rank} with {size_var}={size}: a rank is below the size")
    host = env.get("MASTER_ADDR")
    if env.get("MASTER_PORT") is not None:
        port = _int_var("MASTER_PORT")
        if not 1 <= port <= 65535:
            raise ValueError(f"MASTER_PORT={port}: a TCP port is 1 to 65535")
    elif launcher == "srun":
        # as Lightning's SLURMEnvironment does: a port of the job's own, here per step too
        port = 15000 + (_int_var("SLURM_JOB_ID") * 7 + int(env.get("SLURM_STEP_ID", "0") or 0)) % 20000
    else:
        raise ValueError(
            f"this process is rank {rank} of {size} ({rank_var}/{size_var}), started without MPI: "
            f"set MASTER_ADDR and MASTER_PORT to where rank 0 is to meet the others"
        )
    if not host:
        if launcher != "srun":
            raise ValueError(
                f"this process is rank {rank} of {size} ({rank_var}/{size_var}), started without MPI: "
                f"set MASTER_ADDR to rank 0's host"
            )
        host = _first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "")
    # a secret the launcher gave every rank (PARRBM_SECRET) keeps strangers out; without
    # one, the job's own ids keep another job on the same port out
    token = env.get("PARRBM_SECRET") or "|".join(
        [
            launcher,
            env.get("SLURM_JOB_ID", ""),
            env.get("SLURM_STEP_ID", ""),
            env.get("TORCHELASTIC_RUN_ID", ""),
            str(size),
            host,
            str(port),
        ]
    )
    return rank, size, host, port, hashlib.sha256(token.encode()).digest(), f"{launcher} ({rank_var}/{size_var})"


def _first_host(nodelist: str) -> str:
    """The first host of a Slurm node list ("node[1-3],gpu7" -> "node1")."""
    if not nodelist:
        raise ValueError("srun started this task without SLURM_STEP_NODELIST: set MASTER_ADDR to rank 0's host")
    import shutil
    import subprocess

    if shutil.which("scontrol"):
        p = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.split():
            return p.stdout.split()[0]
    first = nodelist.split(",")[0]
    if "[" in first:
        stem, _, rest = first.partition("[")
        first = stem + rest.split("-")[0].split(",")[0].rstrip("]")
    return first


def spmd_agree_on_data(X, seed: int, who: str = "RBM") -> int:
    """In an SPMD fit: rank 0's seed on every rank, after checking that every rank passes
    the same X (ValueError naming the ranks whose X differs). Outside one: ``seed``."""
    world = launcher_world()
    if world is None:
        return seed
    import numpy as np

    h = hashlib.sha256()
    for part in (X.data, X.indices, X.indptr) if hasattr(X, "indptr") else (X,):  # CSR as it is stored
        h.update(np.ascontiguousarray(part).view(np.uint8).reshape(-1))
    digest = h.hexdigest() + str(X.shape)
    digests = world.allgather(digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise ValueError(
            f"{who}: a fit on the ranks of a job needs the same X on every rank (each worker trains on all of it); "
            f"ranks {differ} passed other data than rank 0"
        )
    return world.bcast(seed, root=0)


def spmd_leader() -> bool:
    """Whether this process writes and prints for an SPMD fit: rank 0, or not one."""
    world = spmd_world()
    return world is None or world[0] == 0


# ---- the books over TCP ---------------------------------------------------------------------------

#: frame kinds: data, abort (with the reason), bye (the rank left after its last collective)
_DATA, _ABORT, _BYE = b"D", b"A", b"B"
_HEAD = struct.Struct("<cQ")
_LEFT = object()  # in an inbox: the peer said bye


class _Data(PlainData):
    """:class:`PlainData`, and parrbm's own dataclasses: a message never runs code."""

    what = "a message"

    def find_class(self, module: str, name: str):
        if module.startswith("parrbm.") and module in sys.modules:
            import dataclasses

            obj = getattr(sys.modules[module], name, None)
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                return obj
        return super().find_class(module, name)


def _loads(payload: bytes):
    return _Data(io.BytesIO(payload)).load()


def _proof(secret: bytes, nonce: bytes, rank: int) -> bytes:
    return hmac.new(secret, b"parrbm-world" + nonce + struct.pack("<i", rank), hashlib.sha256).digest()


class TCPWorld:
    """The ranks of a job started without MPI, joined through rank 0 (a star): rank 0
    listens on ``port``, every other rank connects to ``host:port`` and proves it knows
    the job's secret. Each connection has a reader thread, so that a rank learns at once
    that the job ended: a peer's abort or a closed connection (its process gone, however)
    ends this rank too, naming the peer; rank 0 passes it on to the others."""

    #: how long the ranks have to meet (interpreters start, a task is scheduled late)
    CONNECT_SECONDS = 60.0
    HANDSHAKE_SECONDS = 5.0

    def __init__(self, rank: int, size: int, host: str, port: int, secret: bytes, launcher: str = ""):
        self.rank, self.size, self.launcher = rank, size, launcher
        self.where = f"{host}:{port}"
        self._secret = secret
        self._socks: dict[int, socket.socket] = {}
        self._inbox: dict[int, queue.Queue] = {}
        self._send_lock = threading.Lock()
        self._leaving = False
        if rank == 0:
            self._accept(port)
        else:
            self._connect(host, port)
        for peer, sock in self._socks.items():
            self._inbox[peer] = queue.Queue()
            threading.Thread(target=self._read, args=(peer, sock), daemon=True, name=f"parrbm-world-{peer}").start()
        atexit.register(self._bye)

    # ---- meeting ------------------------------------------------------------------------------

    def _accept(self, port: int) -> None:
        try:
            listener = socket.create_server(("", port), reuse_port=False)
        except OSError as exc:
            raise ValueError(
                f"rank 0 cannot listen on port {port} for the job's rendezvous ({exc.strerror or exc}): "
                f"set MASTER_PORT to a free port"
            ) from None
        deadline = time.monotonic() + self.CONNECT_SECONDS
        refused = 0
        with listener:
            while len(self._socks) < self.size - 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [r for r in range(1, self.size) if r not in self._socks]
                    raise ValueError(
                        f"ranks {missing} of {self.size} did not reach rank 0's rendezvous at port {port} "
                        f"within {self.CONNECT_SECONDS:g} s (MASTER_ADDR/MASTER_PORT as they see it?)"
                        + (f"; {refused} connections without the job's secret were refused" if refused else "")
                    )
                listener.settimeout(left)
                try:
                    sock, _ = listener.accept()
                except socket.timeout:
                    continue
                peer = self._greet(sock)
                if peer is None:
                    refused += 1
                    sock.close()
                    continue
                self._socks[peer] = sock

    def _greet(self, sock: socket.socket) -> int | None:
        """A newcomer's rank once it has proven the secret, else None."""
        try:
            sock.settimeout(self.HANDSHAKE_SECONDS)
            nonce = os.urandom(16)
            sock.sendall(nonce)
            from parrbm.harness.frames import read_exact

            got = read_exact(sock, 4 + 32)
            (peer,) = struct.unpack("<i", got[:4])
            if (
                not (0 < peer < self.size)
                or peer in self._socks
                or not hmac.compare_digest(got[4:], _proof(self._secret, nonce, peer))
            ):
                return None
            sock.sendall(b"ok")
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return peer
        except (OSError, ConnectionError, struct.error):
            return None

    def _connect(self, host: str, port: int) -> None:
        from parrbm.harness.frames import read_exact

        deadline = time.monotonic() + self.CONNECT_SECONDS
        why = ""
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection((host, port), timeout=self.HANDSHAKE_SECONDS)
                nonce = read_exact(sock, 16)
                sock.sendall(struct.pack("<i", self.rank) + _proof(self._secret, nonce, self.rank))
                if read_exact(sock, 2) == b"ok":
                    sock.settimeout(None)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._socks[0] = sock
                    return
                why = "it refused this rank's proof of the job's secret"
            except (OSError, ConnectionError) as exc:
                why = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
            time.sleep(0.2)  # rank 0 is not listening yet
        raise ValueError(
            f"rank {self.rank} of {self.size} could not reach rank 0's rendezvous at {host}:{port} within "
            f"{self.CONNECT_SECONDS:g} s ({why}); check MASTER_ADDR and MASTER_PORT"
        )

    # ---- frames -------------------------------------------------------------------------------

    def _send(self, peer: int, kind: bytes, payload: bytes = b"") -> None:
        with self._send_lock:
            self._socks[peer].sendall(_HEAD.pack(kind, len(payload)) + payload)

    def _read(self, peer: int, sock: socket.socket) -> None:
        from parrbm.harness.frames import read_exact

        try:
            while True:
                kind, n = _HEAD.unpack(read_exact(sock, _HEAD.size))
                payload = read_exact(sock, n) if n else b""
                if kind == _DATA:
                    self._inbox[peer].put(payload)
                elif kind == _BYE:
                    self._inbox[peer].put(_LEFT)
                    return
                elif kind == _ABORT:
                    self._end(payload.decode(errors="replace"), tell=True, said=False)
                else:
                    raise ConnectionError(f"a frame of kind {kind!r}")
        except (OSError, ConnectionError, struct.error) as exc:
            if self._leaving:
                return
            self._end(f"rank {peer} of the job is gone (its connection closed: {exc}); the job was ended", tell=True)
        except BaseException as exc:  # noqa: BLE001 - a reader that fails must end the job, not leave it waiting
            if self._leaving:
                return
            self._end(
                f"reading rank {peer}'s messages failed ({type(exc).__name__}: {exc}); the job was ended", tell=True
            )

    def _end(self, message: str, *, tell: bool, said: bool = True) -> None:
        """End this rank (and, from rank 0, every other rank) at once."""
        if said:
            sys.stderr.write(f"parrbm: rank {self.rank}: {message}\n")
            sys.stderr.flush()
        if tell:
            for peer in list(self._socks):
                try:
                    self._send(peer, _ABORT, message.encode())
                except OSError:
                    pass
        os._exit(1)

    def _post(self, peer: int, obj) -> None:
        try:
            self._send(peer, _DATA, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            self._end(f"cannot reach rank {peer} ({exc}); the job was ended", tell=True)

    def _take(self, peer: int):
        payload = self._inbox[peer].get()
        if payload is _LEFT:
            raise RuntimeError(f"rank {peer} of the job left before this collective ({self.launcher})")
        return _loads(payload)

    # ---- what mpi4py's communicator offers ----------------------------------------------------

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def bcast(self, obj, root: int = 0):
        if root != 0:
            raise ValueError("TCPWorld.bcast: from rank 0 only")
        if self.rank == 0:
            for peer in range(1, self.size):
                self._post(peer, obj)
            return obj
        return self._take(0)

    def gather(self, obj, root: int = 0):
        if root != 0:
            raise ValueError("TCPWorld.gather: to rank 0 only")
        if self.rank == 0:
            return [obj, *(self._take(peer) for peer in range(1, self.size))]
        self._post(0, obj)
        return None

    def allgather(self, obj) -> list:
        return self.bcast(self.gather(obj))

    def Barrier(self) -> None:
        self.allgather(None)

    def Abort(self, code: int = 1) -> None:
        """End the job: every rank exits at once."""
        for peer in list(self._socks):
            try:
                self._send(peer, _ABORT, f"rank {self.rank} ended the job".encode())
            except OSError:
                pass
        os._exit(code)

    def _bye(self) -> None:
        """At this rank's exit: its peers learn it left on purpose."""
        self._leaving = True
        for peer, sock in list(self._socks.items()):
            try:
                self._send(peer, _BYE)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
