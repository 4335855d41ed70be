"""Test-only crash hooks: `CONDUITD_CRASH_AT=<label>[:<n>]` exits at a labelled step.

The variable is read once, at import. When it is unset, `crash_point` costs one
global lookup and a comparison, so hooks can sit on hot paths.
"""

from __future__ import annotations

import os
import sys
from typing import Final

ENV_VAR: Final = "CONDUITD_CRASH_AT"
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
