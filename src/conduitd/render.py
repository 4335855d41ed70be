"""Text renderings of status and history documents.

Light on purpose: the CLI prints these for answers from a running daemon, so
this module imports nothing heavier than typing (BENCHMARKING.md: no pydantic,
aiosqlite or structlog on the client path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def status_lines(document: Mapping[str, Any]) -> list[str]:
    daemon = document.get("daemon")
    lines = [
        f"daemon: running, pid {daemon['pid']}" if daemon else "daemon: not running"
    ]
    for c in document["conduits"]:
        flags = [] if c["enabled"] else ["disabled"]
        if c["paused"]:
            flags.append("paused")
        last = c["last_generation"]
        last_text = (
            f"generation {last['generation']} {last['verification_status']}"
            if last
            else "never run"
        )
        suffix = f" [{', '.join(flags)}]" if flags else ""
        lines.append(f"{c['name']}: {c['mode']}, {c['schedule']}, {last_text}{suffix}")
        for side, endpoint in c["endpoints"].items():
            lines.append(f"  {side}: {endpoint['path']} ({endpoint['state']})")
        if c["last_error"]:
            lines.append(f"  last error: {c['last_error']}")
    return lines


def history_lines(document: list[dict[str, Any]]) -> list[str]:
    if not document:
        return ["no generations yet"]
    return [
        f"{g['generation']:>5}  {g['started_at']}  {g['verification_status']:<22}"
        f" copied {g['files_copied']}, updated {g['metadata_updated']},"
        f" deleted {g['files_deleted']}, errors {g['errors_encountered']}"
        for g in document
    ]
