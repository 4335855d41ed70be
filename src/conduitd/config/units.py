"""Durations and sizes as the config writes them: "50ms", "20G", "1%"."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

DURATION_FORMAT: Final = (
    'a whole number from 1 and a unit ms, s, m, h or d, e.g. "50ms", "30s", "1h"'
)
SIZE_FORMAT: Final = (
    'a whole number of bytes, optionally with a binary unit K, M, G or T, e.g. "512M"'
)
MIN_FREE_FORMAT: Final = f'a size ({SIZE_FORMAT}) or a percentage such as "1%"'

# At most a century: far beyond any sensible setting, and well inside what
# timedelta, APScheduler and anyio accept.
MAX_DURATION_S: Final = 36_500 * 86_400
# SQLite INTEGER is a signed 64-bit value.
MAX_SIZE_BYTES: Final = 2**63 - 1

_DURATION_RE: Final = re.compile(r"([1-9][0-9]*)(ms|s|m|h|d)")
_SIZE_RE: Final = re.compile(r"(0|[1-9][0-9]*)([KMGT]?)")
_PERCENT_RE: Final = re.compile(r"(0|[1-9][0-9]{0,2})(\.[0-9]{1,2})?%")
_UNIT_S: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_UNIT_BYTES: Final[dict[str, int]] = {
    "": 1,
    "K": 2**10,
    "M": 2**20,
    "G": 2**30,
    "T": 2**40,
}
# Longest digit string we convert; keeps int() clear of its digit limit.
_MAX_DIGITS: Final = 20


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "50ms", "30s", "5m", "1h" or "30d".

    Raises:
        ValueError: not `^[1-9][0-9]*(ms|s|m|h|d)$`, or longer than a century.
    """
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; allowed: {DURATION_FORMAT}")
    digits, unit = match.groups()
    if len(digits) > _MAX_DIGITS:
        raise ValueError(f"{text!r} is too long; allowed: at most 36500d")
    count = int(digits)
    seconds = count / 1000 if unit == "ms" else float(count * _UNIT_S[unit])
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is too long; allowed: at most 36500d")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest duration text for `seconds` ("1h", "1500ms"); see parse_duration.

    Raises:
        ValueError: not a positive whole number of milliseconds.
    """
    for unit in ("d", "h", "m", "s"):
        count, rest = divmod(seconds, _UNIT_S[unit])
        if rest == 0 and count >= 1:
            return f"{int(count)}{unit}"
    millis = round(seconds * 1000)
    if millis < 1 or millis / 1000 != seconds:
        raise ValueError(f"{seconds!r} s is not a whole number of milliseconds >= 1")
    return f"{millis}ms"


def parse_size(text: str) -> int:
    """Bytes in a size such as "123", "1K", "512M", "20G" (binary units).

    Raises:
        ValueError: not a whole number with an optional K, M, G or T.
    """
    match = _SIZE_RE.fullmatch(text)
    if match is None or len(match.group(1)) > _MAX_DIGITS:
        raise ValueError(f"{text!r} is not a size; allowed: {SIZE_FORMAT}")
    digits, unit = match.groups()
    size_bytes = int(digits) * _UNIT_BYTES[unit]
    if size_bytes > MAX_SIZE_BYTES:
        raise ValueError(f"{text!r} is too large; allowed: at most 8388607T")
    return size_bytes


def format_size(size_bytes: int) -> str:
    """The shortest size text for `size_bytes` ("1G", "1536K", "123")."""
    for unit in ("T", "G", "M", "K"):
        count, rest = divmod(size_bytes, _UNIT_BYTES[unit])
        if rest == 0 and count >= 1:
            return f"{count}{unit}"
    return str(size_bytes)


@dataclass(frozen=True, slots=True)
class MinFree:
    """Free space a run must leave on the target: a size, or a share of the disk."""

    size_bytes: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if (self.size_bytes is None) == (self.percent is None):
            raise ValueError("MinFree takes either size_bytes or percent")
        if self.size_bytes is not None and self.size_bytes < 0:
            raise ValueError("MinFree.size_bytes must be >= 0")
        if self.percent is not None and not 0 <= self.percent <= 100:
            raise ValueError("MinFree.percent must be within 0..100")

    def required_bytes(self, fs_total_bytes: int) -> int:
        """Bytes that must stay free on a filesystem of `fs_total_bytes`."""
        if self.size_bytes is not None:
            return self.size_bytes
        assert self.percent is not None  # __post_init__: exactly one is set
        return math.ceil(fs_total_bytes * self.percent / 100)

    def __str__(self) -> str:
        if self.size_bytes is not None:
            return format_size(self.size_bytes)
        return f"{self.percent:g}%"


def parse_min_free(text: str) -> MinFree:
    """A `min_free` value: a size ("1G") or a percentage ("1%", "2.5%").

    Raises:
        ValueError: neither a size nor a percentage within 0..100.
    """
    if not text.endswith("%"):
        try:
            return MinFree(size_bytes=parse_size(text))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a size or a percentage; allowed: {MIN_FREE_FORMAT}"
            ) from None
    match = _PERCENT_RE.fullmatch(text)
    percent = float(text[:-1]) if match is not None else -1.0
    if not 0 <= percent <= 100:
        raise ValueError(
            f"{text!r} is not a percentage; allowed: 0% to 100%, "
            'at most two decimals, e.g. "1%" or "2.5%"'
        )
    return MinFree(percent=percent)
