"""The tcp transport: K processes, one socket per peer, and -- as in the paper -- one
writer thread and one reader thread per peer, so sending never blocks computing and data
is taken in as soon as it arrives.

Peers prove a per-run secret in the handshake (HMAC-SHA256 challenge/response in both
directions); every frame is checked (:mod:`parrbm.harness.frames`). The transport counts
the bytes it really writes (payload + headers) besides the payload the Comm layer counts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import select
import socket
import threading
import time

import numpy as np

from parrbm.harness import frames as F
from parrbm.harness.comm import CommError, Transport

_CLOSED = object()
#: seconds an incoming connection has to prove it knows the run's secret
HANDSHAKE_SECONDS = 5.0
#: handshakes in progress at once (beyond them a new connection is closed at once)
MAX_PENDING_HANDSHAKES = 64


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


class TCPTransport(Transport):
    def __init__(
        self,
        rank: int,
        size: int,
        secret: bytes,
        listener: socket.socket,
        addresses: list[tuple[str, int]],
        *,
        timeout: float = 60.0,
        max_length: int = F.DEFAULT_MAX_LENGTH,
    ):
        self.rank, self.size = rank, size
        self.secret = secret
        self.timeout = timeout
        self.max_length = max_length
        self.socks: dict[int, socket.socket] = {}
        self.inbox: dict[int, queue.Queue] = {}
        self.outbox: dict[int, queue.Queue] = {}
        self.seq = 0
        self.wire_bytes = 0  # everything written: headers + payload
        self.wire_frames = 0
        self._lock = threading.Lock()
        self._connect(listener, addresses)
        for j, s in self.socks.items():
            s.settimeout(None)
            self.inbox[j] = queue.Queue()
            self.outbox[j] = queue.Queue()
            threading.Thread(target=self._reader, args=(j,), daemon=True, name=f"tcp-read-{j}").start()
            threading.Thread(target=self._writer, args=(j,), daemon=True, name=f"tcp-write-{j}").start()

    # ---- connection set-up --------------------------------------------------------------

    def _connect(self, listener: socket.socket, addresses) -> None:
        deadline = time.monotonic() + self.timeout
        for j in range(self.rank):  # dial every lower rank
            host, port = addresses[j]
            s = socket.create_connection((host, port), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._handshake_dial(s, j)
            self.socks[j] = s
        # Every connection's handshake runs in a thread of its own with a short deadline: a
        # stranger that connects and stays silent (or sends a hello and stops) is dropped
        # when its deadline passes, and never holds up a real peer dialing meanwhile.
        # the loop sleeps in select until a connection arrives or a handshake ends (its
        # thread writes a byte to `wake`): a finished handshake is taken at once
        listener.setblocking(False)
        self.rejected: list[str] = []
        done: queue.Queue = queue.Queue()
        wake_r, wake = socket.socketpair()
        pending = 0
        try:
            while len(self.socks) < self.size - 1:  # accept every higher rank
                while not done.empty():
                    pending -= 1
                    s, j, why = done.get()
                    if why is None and j in self.socks:
                        why = f"worker {self.rank}: worker {j} connected twice"
                    if why is None:
                        self.socks[j] = s
                    else:
                        self.rejected.append(why)
                        s.close()
                if len(self.socks) == self.size - 1:
                    break
                if time.monotonic() > deadline:
                    missing = [j for j in range(self.rank + 1, self.size) if j not in self.socks]
                    seen = (
                        f"; {len(self.rejected)} other connection(s) to its port were refused (the last: "
                        f"{self.rejected[-1]})"
                        if self.rejected
                        else ""
                    )
                    raise CommError(
                        f"worker {self.rank}: workers {missing} did not connect within {self.timeout:g} s{seen}"
                    )
                ready, _, _ = select.select([listener, wake_r], [], [], max(0.0, deadline - time.monotonic()))
                if wake_r in ready:
                    wake_r.recv(4096)
                if listener not in ready:
                    continue
                try:
                    s, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                s.setblocking(True)
                if pending >= MAX_PENDING_HANDSHAKES:  # a flood of connections: the newest wait their turn
                    s.close()
                    self.rejected.append("a connection beyond the handshakes in progress")
                    continue
                pending += 1
                threading.Thread(
                    target=self._handshake_thread, args=(s, done, wake), daemon=True, name="tcp-handshake"
                ).start()
        finally:
            listener.close()
            wake_r.close()
            wake.close()
            while not done.empty():  # handshakes that ended after the last peer was taken
                s = done.get()[0]
                if s not in self.socks.values():
                    s.close()

    def _handshake_thread(self, s: socket.socket, done: queue.Queue, wake: socket.socket) -> None:
        why = None
        try:
            s.settimeout(min(HANDSHAKE_SECONDS, self.timeout))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            done.put((s, self._handshake_accept(s, claimed=False), None))
        except socket.timeout:
            why = (
                f"worker {self.rank}: a connection sent no valid handshake within "
                f"{min(HANDSHAKE_SECONDS, self.timeout):g} s and was dropped"
            )
        except (F.FrameError, ConnectionError, OSError, CommError) as exc:
            why = str(exc)
        if why is not None:
            # a refused connection is never used: closed here, also when the rendezvous
            # ended before its handshake did (a stranger still silent)
            s.close()
            done.put((s, None, why))
        try:
            wake.send(b"!")
        except OSError:  # the rendezvous is over
            pass

    def _handshake_dial(self, s, j: int) -> None:
        nonce = os.urandom(32)
        s.sendall(F.pack_header(F.HELLO, self.rank, 32) + nonce)
        kind, _, payload = F.read_frame(s, 64)
        if kind != F.CHALLENGE or len(payload) != 64:
            raise CommError(f"worker {self.rank}: worker {j} answered the hello with a {F.KINDS.get(kind)} frame")
        peer_nonce, proof = payload[:32], payload[32:]
        if not hmac.compare_digest(proof, _mac(self.secret, b"accept", nonce)):
            raise CommError(f"worker {self.rank}: the process at worker {j}'s address does not know this run's secret")
        s.sendall(
            F.pack_header(F.RESPONSE, self.rank, 32)
            + _mac(self.secret, b"dial", peer_nonce, self.rank.to_bytes(4, "big"))
        )

    def _handshake_accept(self, s, *, claimed: bool = True) -> int:
        kind, tag, nonce = F.read_frame(s, 64)
        if kind != F.HELLO or len(nonce) != 32 or not (self.rank < tag < self.size):
            raise CommError(
                f"worker {self.rank}: refused a connection that did not open with a "
                f"valid hello (kind {F.KINDS.get(kind)}, rank {tag})"
            )
        mine = os.urandom(32)
        s.sendall(F.pack_header(F.CHALLENGE, self.rank, 64) + mine + _mac(self.secret, b"accept", nonce))
        kind, rank, proof = F.read_frame(s, 64)
        if (
            kind != F.RESPONSE
            or rank != tag
            or not hmac.compare_digest(proof, _mac(self.secret, b"dial", mine, tag.to_bytes(4, "big")))
        ):
            raise CommError(
                f"worker {self.rank}: refused a connection claiming to be worker {tag}: wrong proof of the run's secret"
            )
        if claimed and tag in self.socks:
            raise CommError(f"worker {self.rank}: worker {tag} connected twice")
        return tag

    # ---- the reader and writer threads ---------------------------------------------------------

    def _reader(self, j: int) -> None:
        s = self.socks[j]
        try:
            while True:
                self.inbox[j].put(F.read_frame(s, self.max_length))
        except BaseException as exc:  # noqa: BLE001 - whatever ends the reader ends the peer's collectives, named
            self.inbox[j].put((_CLOSED, exc))

    def _writer(self, j: int) -> None:
        s = self.socks[j]
        while True:
            item = self.outbox[j].get()
            if item is None:
                return
            header, payload, done = item
            try:
                s.sendall(header)
                if payload is not None:
                    s.sendall(payload)
                with self._lock:
                    self.wire_bytes += len(header) + (0 if payload is None else payload.nbytes)
                    self.wire_frames += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the collective waiting for it
                done.error = exc
            done.set()

    # ---- Transport ----------------------------------------------------------------------------

    def exchange(self, sends, receive) -> float:
        self.seq += 1
        tag = self.seq
        pending = []
        for j in range(self.size):
            if j == self.rank:
                continue
            a = sends[j]
            done = threading.Event()
            done.error = None
            if a is None:
                self.outbox[j].put((F.pack_header(F.EMPTY, tag, 0), None, done))
            else:
                view = memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # empty blocks too
                self.outbox[j].put((F.pack_header(F.DATA, tag, view.nbytes), view, done))
            pending.append((j, done))
        wait = 0.0
        for j in range(self.size):
            if j == self.rank:
                continue
            t0 = time.perf_counter()
            try:
                item = self.inbox[j].get(timeout=self.timeout)
            except queue.Empty:
                raise CommError(
                    f"worker {j} sent nothing for {self.timeout:g} s in phase "
                    f"'{self.phase}' (seen by worker {self.rank})",
                    peer=j,
                ) from None
            wait += time.perf_counter() - t0
            if item[0] is _CLOSED:
                raise CommError(
                    f"worker {j} closed its connection or sent a bad frame in phase "
                    f"'{self.phase}' (seen by worker {self.rank}): {item[1]}",
                    peer=j,
                )
            kind, got_tag, payload = item
            if got_tag != tag or kind not in (F.DATA, F.EMPTY):
                raise CommError(
                    f"worker {j} is out of step in phase '{self.phase}': frame "
                    f"{F.KINDS[kind]} #{got_tag}, expected #{tag}"
                )
            if kind == F.DATA:
                receive(j, np.frombuffer(payload, np.uint8))
        # The caller may reuse its buffers once this returns: wait for our own writes.
        for j, done in pending:
            if not done.wait(self.timeout):
                raise CommError(
                    f"worker {self.rank}: could not write to worker {j} for {self.timeout:g} s in phase '{self.phase}'"
                )
            if done.error is not None:
                raise CommError(
                    f"worker {self.rank}: writing to worker {j} failed in phase '{self.phase}': {done.error}"
                )
        return wait

    def barrier(self) -> float:
        return self.exchange([None] * self.size, lambda j, b: None)

    def take_wire(self) -> tuple[int, int]:
        """(bytes, frames) written since the last call."""
        with self._lock:
            out = (self.wire_bytes, self.wire_frames)
            self.wire_bytes = self.wire_frames = 0
        return out

    def close(self) -> None:
        for q in self.outbox.values():
            q.put(None)
        for s in self.socks.values():
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
