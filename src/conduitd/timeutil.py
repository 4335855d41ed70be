"""Timestamps as DESIGN.md wants them: RFC 3339, UTC, with `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_utc(moment: datetime) -> str:
    """`2026-11-22T01:02:03.456789Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now_text() -> str:
    return format_utc(utc_now())


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text)
