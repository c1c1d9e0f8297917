"""Parse watchdog durations: plain seconds (``10``, ``1.5``) or Go-style (``30s``, ``1m30s``).

of-watchdog reads its timeouts with Go's ``time.ParseDuration`` after trying a plain integer,
so stack files written for OpenFaaS carry both spellings; we accept both, plus fractional
plain seconds.
"""

from __future__ import annotations

import re

_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN, as Go accepts
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU, as Go accepts
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# "ms" must be tried before "m" and "s"; the alternation order does that.
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
# Plain numbers only: float() would also take "inf", "nan" and "1e3", which no one means here.
_PLAIN = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str) -> float:
    """Return ``text`` as non-negative seconds; raise ValueError when it is not a duration."""
    value = text.strip()
    if _PLAIN.fullmatch(value):
        return float(value)
    if not value:
        raise ValueError("empty duration")
    total_s = 0.0
    pos = 0
    while pos < len(value):
        part = _PART.match(value, pos)
        if part is None:
            raise ValueError(f"invalid duration {text!r}")
        total_s += float(part[1]) * _UNIT_S[part[2]]
        pos = part.end()
    return total_s
