"""Where the config and the state dir live, and how path values are read.

Light on purpose: `reload` and `stop` use this module alone, so it imports
tomllib and nothing heavy (no pydantic).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Final

CONFIG_ENV: Final = "CONDUITD_CONFIG"
PATH_FORMAT: Final = (
    "a directory; ~ expands, a relative path is taken from the config file's directory"
)

_DAEMON_HEADER_RE: Final = re.compile(r"\s*\[\s*daemon\s*\]\s*(#.*)?")
_STATE_DIR_LINE_RE: Final = re.compile(r"\s*(daemon\s*\.\s*)?state_dir\s*=")


def resolve_config_path(cli_value: str | None) -> Path:
    """The config file: `--config`, else $CONDUITD_CONFIG, else the XDG default.

    The XDG default is `$XDG_CONFIG_HOME/conduitd/conduitd.toml`, with
    `~/.config` when XDG_CONFIG_HOME is unset or not absolute. An empty value
    counts as unset. `~` expands; the result is absolute.
    """
    chosen = cli_value or os.environ.get(CONFIG_ENV)
    if chosen:
        return Path(os.path.abspath(os.path.expanduser(chosen)))
    return _xdg_home("XDG_CONFIG_HOME", "~/.config") / "conduitd" / "conduitd.toml"


def default_state_dir() -> Path:
    """The state dir when the config names none: `$XDG_STATE_HOME/conduitd`.

    `~/.local/state/conduitd` when XDG_STATE_HOME is unset or not absolute.
    """
    return _xdg_home("XDG_STATE_HOME", "~/.local/state") / "conduitd"


def _xdg_home(variable: str, fallback: str) -> Path:
    # The XDG base directory spec says relative values are to be ignored.
    value = os.environ.get(variable, "")
    if os.path.isabs(value):
        return Path(os.path.abspath(value))
    return Path(os.path.abspath(os.path.expanduser(fallback)))


def expand_path(text: str, base_dir: Path) -> Path:
    """An absolute path from a config value: `~` expands, relative joins base_dir.

    Raises:
        ValueError: empty, contains a NUL byte, or a `~` that cannot expand.
    """
    if not text:
        raise ValueError(f"must not be empty; allowed: {PATH_FORMAT}")
    if "\0" in text:
        raise ValueError(f"{text!r} contains a NUL byte; a path cannot")
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):
        user = expanded.split("/", 1)[0]
        raise ValueError(
            f"{text!r}: cannot expand {user!r} (no such user, or no home directory)"
        )
    return Path(os.path.abspath(os.path.join(base_dir, expanded)))


def real_path(text: str, base_dir: Path) -> Path:
    """expand_path, then symlinks resolved (os.path.realpath): endpoints compare so.

    Raises:
        ValueError: as expand_path.
    """
    return Path(os.path.realpath(expand_path(text, base_dir)))


def read_state_dir_leniently(path: Path) -> Path:
    """`daemon.state_dir` from the config at `path`, ignoring every other problem.

    Used by `reload` and `stop`, which must reach the daemon while the config
    is broken: a file that is missing, unreadable, not UTF-8 or not valid TOML
    still yields its `state_dir` line when one can be read, else the default.
    The result equals what load_config gives for the same file.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return default_state_dir()
    value = _state_dir_value(text)
    if value is None:
        return default_state_dir()
    try:
        return expand_path(value, Path(os.path.abspath(path)).parent)
    except ValueError:
        return default_state_dir()


def _state_dir_value(text: str) -> str | None:
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return _state_dir_from_lines(text)
    daemon = document.get("daemon")
    value = daemon.get("state_dir") if isinstance(daemon, dict) else None
    return value if isinstance(value, str) else None


def _state_dir_from_lines(text: str) -> str | None:
    """Find `state_dir = "..."` in a document TOML cannot parse as a whole.

    Looks in the `[daemon]` table, or for `daemon.state_dir` before any table,
    and parses that one line on its own.
    """
    table: str | None = ""
    for line in text.splitlines():
        if _DAEMON_HEADER_RE.fullmatch(line):
            table = "daemon"
            continue
        if line.lstrip().startswith("["):
            table = None
            continue
        match = _STATE_DIR_LINE_RE.match(line)
        dotted = match is not None and match.group(1) is not None
        if match is None or table != ("" if dotted else "daemon"):
            continue
        try:
            value = tomllib.loads("state_dir " + line[match.end() - 1 :])
        except (tomllib.TOMLDecodeError, RecursionError):
            continue
        found = value.get("state_dir")
        if isinstance(found, str):
            return found
    return None
