"""Figures users write with a unit: link bandwidths ('105MB/s') and latencies ('0.091ms')."""

from __future__ import annotations

import math
import re

_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2.0**10, "mi": 2.0**20, "gi": 2.0**30, "ti": 2.0**40}
#: b is a bit and B a byte (bit, byte spelled out too); per second as /s or ps
_BANDWIDTH = re.compile(
    r"(?P<num>[-+0-9.eE]+|[-+]?inf(inity)?|nan)\s*(?P<prefix>[kKmMgGtT]i?)?"
    r"(?P<unit>bits?|Bits?|bytes?|Bytes?|b|B)(?P<per>/s|/sec|ps)"
)
BANDWIDTH_FORMS = (
    "B/s, kB/s, MB/s, GB/s (bytes, powers of 10), KiB/s, MiB/s, GiB/s (powers of 2), "
    "bit/s, kbit/s, Mbit/s, Gbit/s or b/s, Mb/s, Gb/s (bits), and the same as Bps, MBps, "
    "Mbps, Gbps; e.g. 105MB/s or 1Gbit/s"
)
_LATENCY = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


def _number(text: str, what: str, given: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {given!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {given!r}: the number must be finite")
    return value


def parse_bandwidth(text: str) -> float:
    """'105MB/s', '1.25 GB/s', '10Gbit/s', '100Mbps', '800MiB/s' -> bytes per second.
    b is a bit and B a byte; k, M, G are powers of 10, Ki, Mi, Gi powers of 2. A missing
    or unknown unit is refused, listing the accepted forms."""
    if not isinstance(text, str):
        raise ValueError(f"bandwidth {text!r}: expected text with a unit, one of {BANDWIDTH_FORMS}")
    m = _BANDWIDTH.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bandwidth {text!r}: expected a number and a unit: {BANDWIDTH_FORMS}")
    value = _number(m["num"], "bandwidth", text)
    unit = m["unit"]
    bits = unit in ("b",) or unit.lower().startswith("bit")
    value *= _PREFIX[(m["prefix"] or "").lower()] / (8 if bits else 1)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"bandwidth {text!r} must be a positive, finite rate")
    return value


def parse_latency(text: str) -> float:
    """'0.091ms', '50us', '2e-5s' -> seconds (s, ms, us or µs, ns; the unit is required)."""
    if not isinstance(text, str):
        raise ValueError(f"latency {text!r}: expected text with a unit: s, ms, us or ns (e.g. 0.091ms)")
    m = re.fullmatch(r"(?P<num>[-+0-9.eE]+|[-+]?inf(inity)?|nan)\s*(?P<unit>[a-zµμ]+)", text.strip())
    if not m or m["unit"] not in _LATENCY:
        raise ValueError(
            f"latency {text!r}: expected a non-negative number with s, ms, us (or µs) or ns (e.g. 0.091ms)"
        )
    value = _number(m["num"], "latency", text) * _LATENCY[m["unit"]]
    if value < 0:
        raise ValueError(f"latency {text!r} must not be negative")
    return value
