"""Text renderings of status, history and conflicts documents.

Light on purpose: the CLI prints these for answers from a running daemon, so
this module imports nothing heavier than typing (BENCHMARKING.md: no pydantic,
aiosqlite or structlog on the client path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def conflict_lines(documents: Sequence[Mapping[str, Any]]) -> list[str]:
    """`conduitd conflicts` as text: one line per conflict, then both sides."""
    if not documents:
        return ["no conflicts"]
    lines = []
    for c in documents:
        state = c["status"] if c["resolution"] is None else f"kept {c['resolution']}"
        lines.append(
            f"{c['id']:>5}  {c['conduit']}  {c['path']}  {state}"
            f"  (generation {c['detected_generation']})"
        )
        for side in ("source", "target"):
            s = c[side]
            if s["kind"] is None:
                lines.append(f"       {side}: absent")
                continue
            digest = (s["content_id"] or "")[:12]
            lines.append(
                f"       {side}: {s['kind']}, {s['size']} bytes,"
                f" mtime_ns {s['mtime_ns']} {digest}".rstrip()
            )
    return lines
