"""Shell completion of conduit names (issue 9), read leniently from the config.

Completion runs on every Tab: it reads the TOML with `tomllib` only (no
pydantic, no validation) and offers whatever `[[conduit]]` names it finds; a
missing or broken config completes nothing rather than failing.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
from click.shell_completion import CompletionItem


def conduit_names(config_path: Path) -> list[str]:
    """The `name` of every `[[conduit]]` table that has one; [] when unreadable."""
    try:
        document = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # TOMLDecodeError: a ValueError
        return []
    tables = document.get("conduit")
    if not isinstance(tables, list):
        return []
    return [
        t["name"]
        for t in tables
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]


def complete_conduit_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """click `shell_complete` callback for a NAME argument."""
    from conduitd.config.paths import resolve_config_path

    option = ctx.find_root().params.get("config_option")
    path = resolve_config_path(option if isinstance(option, str) else None)
    return [
        CompletionItem(name)
        for name in conduit_names(path)
        if name.startswith(incomplete)
    ]
