"""The TCP wire format: one fixed header per frame, then the payload.

    magic   4 bytes  b"PRBM"
    version 1 byte   1
    kind    1 byte   DATA, EMPTY, HELLO, CHALLENGE, RESPONSE
    flags   2 bytes  0
    tag     4 bytes  sequence number of the exchange (or the sender's rank in a HELLO)
    length  8 bytes  payload bytes, at most the receiver's bound

Network byte order. Anything else is refused with a :class:`FrameError` that says what
was wrong; a reader never waits for more bytes than a valid header announces.
"""

from __future__ import annotations

import socket
import struct

MAGIC = b"PRBM"
VERSION = 1
HEADER = struct.Struct("!4sBBHIQ")
HEADER_SIZE = HEADER.size  # 20

DATA, EMPTY, HELLO, CHALLENGE, RESPONSE = range(5)
KINDS = {DATA: "data", EMPTY: "empty", HELLO: "hello", CHALLENGE: "challenge", RESPONSE: "response"}
DEFAULT_MAX_LENGTH = 1 << 34  # 16 GiB: far above any message of a model that fits here


class FrameError(ValueError):
    """A frame that is not a valid parrbm frame."""


def pack_header(kind: int, tag: int, length: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, 0, tag & 0xFFFFFFFF, length)


def parse_header(raw: bytes, max_length: int = DEFAULT_MAX_LENGTH) -> tuple[int, int, int]:
    """(kind, tag, length) of a header, or FrameError."""
    if len(raw) != HEADER_SIZE:
        raise FrameError(f"truncated header: {len(raw)} of {HEADER_SIZE} bytes")
    magic, version, kind, flags, tag, length = HEADER.unpack(raw)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r} (expected {MAGIC!r}): not a parrbm peer")
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (this parrbm speaks {VERSION})")
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind}")
    if flags != 0:
        raise FrameError(f"unknown frame flags {flags:#x}")
    if length > max_length:
        raise FrameError(f"frame length {length} exceeds the bound {max_length}")
    if kind == EMPTY and length != 0:
        raise FrameError(f"empty frame with length {length}")
    return kind, tag, length


def read_exact(sock, n: int) -> bytes:
    """n bytes from a socket; raises ConnectionError if the peer closes first. One call
    waits for them all (MSG_WAITALL) where the socket blocks: a reader woken for every
    segment of a slow link would take the interpreter from a computing worker each time."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got, _WAITALL)
        if k == 0:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf) if n < 4096 else buf


_WAITALL = getattr(socket, "MSG_WAITALL", 0)


def read_frame(sock, max_length: int = DEFAULT_MAX_LENGTH) -> tuple[int, int, bytes]:
    kind, tag, length = parse_header(read_exact(sock, HEADER_SIZE), max_length)
    payload = read_exact(sock, length) if length else b""
    return kind, tag, payload
