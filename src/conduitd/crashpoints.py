"""Test-only crash hooks: `CONDUITD_CRASH_AT=<label>[:<n>]` exits at a labelled step.

`CONDUITD_FAIL_AT=<label>[:<n>|:*]` makes a labelled durability step report EIO
instead (the n-th hit, or every hit), for the redo-from-scratch tests (issue 8).
The variables are read once, at import. When they are unset, `crash_point` and
`fail_point` cost one global lookup and a comparison, so hooks can sit on hot
paths. The labels are listed in docs/crash-safety.md.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Final

ENV_VAR: Final = "CONDUITD_CRASH_AT"
FAIL_ENV_VAR: Final = "CONDUITD_FAIL_AT"
EXIT_CODE: Final = 137  # what a SIGKILL looks like to a shell


def _parse(spec: str | None) -> tuple[str | None, int]:
    """`label` → (label, 1); `label:n` → (label, n); anything else → no target."""
    if not spec:
        return None, 0
    label, sep, count = spec.rpartition(":")
    if sep and count.isdigit() and label:
        return label, max(int(count), 1)
    return spec, 1


_TARGET, _HIT_AT = _parse(os.environ.get(ENV_VAR))
_hits = 0


def crash_point(label: str) -> None:
    """Exit at once (`os._exit(137)`, no cleanup) on the configured hit of `label`."""
    if _TARGET is None or label != _TARGET:
        return
    global _hits
    _hits += 1
    if _hits >= _HIT_AT:
        sys.stderr.write(f"conduitd: crash point {label} hit {_hits}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def _parse_fail(spec: str | None) -> tuple[str | None, int]:
    """`label` → (label, 1); `label:n` → (label, n); `label:*` → (label, 0: all)."""
    if spec and spec.endswith(":*") and len(spec) > 2:
        return spec[:-2], 0
    return _parse(spec)


_FAIL_TARGET, _FAIL_AT = _parse_fail(os.environ.get(FAIL_ENV_VAR))
_fail_hits = 0


def fail_point(label: str) -> None:
    """Raise EIO on the configured hit of `label` (every hit for `label:*`).

    Raises:
        OSError: EIO, as a failed fsync/syncfs reports it.
    """
    if _FAIL_TARGET is None or label != _FAIL_TARGET:
        return
    global _fail_hits
    _fail_hits += 1
    if _FAIL_AT in (0, _fail_hits):
        sys.stderr.write(f"conduitd: fail point {label} hit {_fail_hits}\n")
        sys.stderr.flush()
        raise OSError(errno.EIO, os.strerror(errno.EIO), f"fail point {label}")


def armed() -> bool:
    """Whether a crash or fail point is configured in this process.

    Work that could run in a forked worker stays in this process then, so a
    point is hit (and counted) where the tests expect it.
    """
    return _TARGET is not None or _FAIL_TARGET is not None
