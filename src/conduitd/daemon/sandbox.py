"""Roots the systemd sandbox keeps read-only (DESIGN.md Platforms).

The generated unit names every root in `ReadWritePaths=` under
`ProtectSystem=strict`; a root added later by reload stays read-only to the
sandboxed daemon until the unit is regenerated. `status` says so, with the
commands to run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from conduitd.config import ConduitConfig

# systemd sets this for every process it starts as a unit.
SYSTEMD_MARKER_ENV: Final = "INVOCATION_ID"


def under_systemd() -> bool:
    return bool(os.environ.get(SYSTEMD_MARKER_ENV))


def sandbox_problems(conduit: ConduitConfig, config_path: Path) -> tuple[str, ...]:
    """One message per root this conduit writes that is mounted read-only here.

    Blocking (statvfs): call it in a worker thread. Empty outside systemd,
    where a read-only root is the sync engine's business to report.
    """
    if not under_systemd():
        return ()
    return tuple(
        _message(root, config_path)
        for root in conduit.written_roots
        if _read_only(root)
    )


def _read_only(root: Path) -> bool:
    try:
        return bool(os.statvfs(root).f_flag & os.ST_RDONLY)
    except OSError:
        return False  # missing or unreadable: reported by the run itself


def _message(root: Path, config_path: Path) -> str:
    if os.geteuid() == 0:
        unit = "/etc/systemd/system/conduitd.service"
        scope, systemctl = "--system", "systemctl"
    else:
        unit = "~/.config/systemd/user/conduitd.service"
        scope, systemctl = "--user", "systemctl --user"
    return (
        f"{root} is read-only to the sandboxed daemon (added after its unit was "
        f"generated?); regenerate the unit: conduitd --config {config_path} unit "
        f"{scope} > {unit} && {systemctl} daemon-reload && "
        f"{systemctl} restart conduitd"
    )
