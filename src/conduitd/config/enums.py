"""The closed sets of words a config may use: modes, strategies, kinds."""

from __future__ import annotations

import enum


class SyncMode(enum.StrEnum):
    """How a conduit keeps its target in step with its source."""

    MIRROR = "mirror"
    BIDIRECTIONAL = "bidirectional"
    SELECTIVE = "selective"

    def as_str(self) -> str:
        """The mode as stored in `sync_conduit.sync_mode` (seed FSYNC-002)."""
        return self.value

    @classmethod
    def from_str(cls, text: str) -> SyncMode:
        """The mode named `text`.

        Raises:
            ValueError: `text` names no mode; the message lists the allowed ones.
        """
        try:
            return cls(text)
        except ValueError:
            allowed = ", ".join(member.value for member in cls)
            raise ValueError(f"{text!r} is not a mode; allowed: {allowed}") from None


class ConflictStrategy(enum.StrEnum):
    """How a bidirectional conduit settles a path changed on both sides."""

    NEWEST_WINS = "newest_wins"
    SOURCE_WINS = "source_wins"
    TARGET_WINS = "target_wins"
    CREATE_CONFLICT_FILE = "create_conflict_file"
    PROMPT_USER = "prompt_user"


class DeleteStrategy(enum.StrEnum):
    """What happens to deleted and overwritten versions."""

    TRASH = "trash"
    PERMANENT = "permanent"


class ScheduleKind(enum.StrEnum):
    """What starts a conduit's runs."""

    MANUAL = "manual"
    INSTANT = "instant"
    INTERVAL = "interval"
    CRON = "cron"


class LogLevel(enum.StrEnum):
    """The least severe log events written."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(enum.StrEnum):
    """How log events are rendered on stderr (`auto`: JSON unless a TTY)."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"
