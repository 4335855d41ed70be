"""conduitd: a daemon that keeps directories in sync and never loses a file."""

from __future__ import annotations

__version__ = "0.1.0"
