"""Run the product as an unprivileged user, so permission checks really apply.

CI runs as root, which ignores file modes: a test about an unreadable file or a
read-only target must run conduitd as `nobody` to mean anything.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

UNPRIVILEGED_USER = "nobody"


def unprivileged_ids() -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def drop_privileges_prefix() -> list[str]:
    """The command prefix that runs a program as `nobody`, or skip the test."""
    ids = unprivileged_ids()
    if ids is None:
        pytest.skip(f"no user {UNPRIVILEGED_USER!r} on this machine")
    uid, gid = ids
    if os.geteuid() != 0:
        if os.geteuid() == uid:
            return []
        pytest.skip("dropping privileges needs root; this test runs as a plain user")
    _let_unprivileged_run_this_checkout()
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", UNPRIVILEGED_USER, "--"]
    pytest.skip("neither setpriv nor runuser is installed")


def _let_unprivileged_run_this_checkout() -> None:
    """`nobody` must reach the interpreter's packages and `src/` to run conduitd.

    A checkout under a 0700 directory (`mktemp -d`) hides the venv from it;
    searching (x, never r) is all that is added, on the checkout's parents.
    """
    make_traversable(Path(sys.prefix))
    make_traversable(Path(__file__).resolve().parents[2] / "src")


def give_to_unprivileged(*paths: Path) -> None:
    """chown trees to `nobody` so it can write where the test expects it to."""
    ids = unprivileged_ids()
    if ids is None or os.geteuid() != 0:
        return
    uid, gid = ids
    for top in paths:
        os.chown(top, uid, gid)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def make_traversable(path: Path) -> None:
    """Let `nobody` reach `path` through its parents (tmp_path is often 0700)."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        os.chmod(parent, mode | 0o011)


def run_conduitd_unprivileged(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m conduitd ARGS` as `nobody`; return its completed process."""
    src = Path(__file__).resolve().parents[2] / "src"
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(src)}
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [*drop_privileges_prefix(), sys.executable, "-m", "conduitd", *args]
    return subprocess.run(
        command,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
