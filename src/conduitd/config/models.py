"""The typed config: `[daemon]`, each `[[conduit]]`, and the loaded whole.

Field names are the TOML keys, except durations, which carry their unit
(`debounce_s`) and take the TOML key as alias. Every value is parsed once,
here; later code never sees the strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from conduitd.config.enums import (
    ConflictStrategy,
    DeleteStrategy,
    LogFormat,
    LogLevel,
    ScheduleKind,
    SyncMode,
)
from conduitd.config.fields import (
    ConduitName,
    DefaultText,
    Duration,
    EndpointPath,
    MinFreeValue,
    OnlyFor,
    OptionalDuration,
    OptionalSize,
    ScheduleValue,
    StateDirPath,
    Strings,
)
from conduitd.errors import UsageError

_FROZEN: Final = ConfigDict(frozen=True, extra="forbid")
# One megabit per second, in bytes per second.
_MBPS_BYTES: Final = 125_000


class DaemonConfig(BaseModel):
    """The `[daemon]` table: settings of the daemon process itself."""

    model_config = _FROZEN

    state_dir: Annotated[
        StateDirPath,
        DefaultText("`$XDG_STATE_HOME/conduitd`, else `~/.local/state/conduitd`"),
    ] = Field(
        default=None,
        validate_default=True,
        description="Where the library, lock and control socket live. A system-wide "
        "config must name it, so the daemon and every CLI call agree on it.",
    )
    log_level: LogLevel = Field(
        default=LogLevel.INFO,
        description="The least severe log events written to stderr.",
    )
    log_format: LogFormat = Field(
        default=LogFormat.AUTO,
        description="How log events are written: `auto` is JSON lines unless stderr "
        "is a terminal.",
    )
    rescan_interval_s: Duration = Field(
        default="1h",
        alias="rescan_interval",
        validate_default=True,
        description="How often every location is rescanned in full, in case the "
        "watcher missed something.",
    )
    shutdown_timeout_s: Duration = Field(
        default="30s",
        alias="shutdown_timeout",
        validate_default=True,
        description="How long a graceful stop (SIGTERM, `conduitd stop`) may take.",
    )
    max_parallel_transfers: StrictInt = Field(
        default=8,
        ge=1,
        le=256,
        description="File transfers running at once, across all conduits.",
    )


class ConduitConfig(BaseModel):
    """One `[[conduit]]`: a source and a target kept in sync."""

    model_config = _FROZEN

    name: ConduitName = Field(
        description="The conduit's identity, unique in the config; CLI commands "
        "name it. Renaming makes a new conduit."
    )
    source: EndpointPath = Field(
        description="The directory changes come from. Endpoints are compared with "
        "symlinks resolved."
    )
    target: EndpointPath = Field(
        description="The directory kept in step with the source (both ways in "
        "bidirectional mode)."
    )
    mode: SyncMode = Field(
        default=SyncMode.MIRROR,
        description="`mirror`: the target becomes a copy of the source. "
        "`bidirectional`: changes flow both ways. `selective`: mirror restricted "
        "to `include` and/or `recent`.",
    )
    schedule: ScheduleValue = Field(
        default="manual",
        validate_default=True,
        description="What starts a run: `manual` (CLI or SIGUSR1), `instant` (file "
        "changes), `interval:<duration>`, or `cron:<expr>` (crontab fields, local "
        "time).",
    )
    enabled: StrictBool = Field(
        default=True, description="A disabled conduit never runs; its history is kept."
    )
    conflict: Annotated[ConflictStrategy, OnlyFor(modes=(SyncMode.BIDIRECTIONAL,))] = (
        Field(
            default=ConflictStrategy.NEWEST_WINS,
            description="How a path changed on both sides is settled. The losing "
            "version goes to trash when `delete` is `trash`.",
        )
    )
    delete: DeleteStrategy = Field(
        default=DeleteStrategy.TRASH,
        description="Whether deleted and overwritten versions go to "
        "`.conduitd/trash/` in their root, or are removed for good.",
    )
    parallel_transfers: StrictInt = Field(
        default=3, ge=1, le=64, description="File transfers this conduit runs at once."
    )
    bandwidth_limit_mbps: StrictInt = Field(
        default=0,
        ge=0,
        description="Transfer limit in megabits per second; 0 is unlimited.",
    )
    use_index_rules: StrictBool = Field(
        default=True,
        description="`false`: this conduit's `ignore` list is not applied.",
    )
    ignore: Strings = Field(
        default=(),
        description="gitignore patterns of paths never copied and never deleted, "
        'e.g. `["*.tmp", ".DS_Store", "node_modules/"]`.',
    )
    include: Annotated[Strings, OnlyFor(modes=(SyncMode.SELECTIVE,))] = Field(
        default=(),
        description="gitignore-style patterns of the paths a selective conduit "
        "syncs; nothing outside them is copied or deleted.",
    )
    recent_s: Annotated[OptionalDuration, OnlyFor(modes=(SyncMode.SELECTIVE,))] = Field(
        default="",
        alias="recent",
        validate_default=True,
        description="Only files modified (mtime) within this time are synced, "
        'e.g. "30d".',
    )
    debounce_s: Annotated[Duration, OnlyFor(schedules=(ScheduleKind.INSTANT,))] = Field(
        default="50ms",
        alias="debounce",
        validate_default=True,
        description="Quiet time after the last file change before a run starts.",
    )
    max_delay_s: Annotated[Duration, OnlyFor(schedules=(ScheduleKind.INSTANT,))] = (
        Field(
            default="10s",
            alias="max_delay",
            validate_default=True,
            description="Under a steady stream of changes, a run starts at the "
            "latest this long after the first one.",
        )
    )
    max_delete_percent: StrictInt = Field(
        default=50,
        ge=0,
        le=100,
        description="Refuse a run that would delete more than this share of the "
        "target's non-ignored files (unless `sync --force`); 100 disables the check.",
    )
    trash_retention_s: Duration = Field(
        default="30d",
        alias="trash_retention",
        validate_default=True,
        description="Trashed versions older than this are pruned; the newest copy "
        "of a file that exists on neither side is kept. See docs/trash-and-restore.md.",
    )
    trash_max_bytes: OptionalSize = Field(
        default="",
        validate_default=True,
        description='Cap on the conduit\'s trash, oldest versions pruned first; "" '
        "is no cap.",
    )
    min_free: MinFreeValue = Field(
        default="1G",
        validate_default=True,
        description="Refuse a run (exit 3, nothing written) that would leave less "
        "free space than this on a filesystem it writes to.",
    )
    on_error: Strings = Field(
        default=(),
        description="A command run (no shell) when a run fails or is refused, with "
        'a JSON summary on stdin, e.g. `["notify-send", "conduitd"]`.',
    )

    @property
    def bandwidth_limit(self) -> int | None:
        """The limit in megabits per second; None when unlimited (stored as NULL)."""
        return self.bandwidth_limit_mbps or None

    @property
    def bandwidth_limit_bytes_per_s(self) -> int | None:
        """The limit in bytes per second; None when unlimited."""
        return self.bandwidth_limit_mbps * _MBPS_BYTES or None

    @property
    def roots(self) -> tuple[Path, Path]:
        """Source and target."""
        return (self.source, self.target)

    @property
    def written_roots(self) -> tuple[Path, ...]:
        """The roots this conduit writes: the target, and the source if bidirectional."""
        if self.mode is SyncMode.BIDIRECTIONAL:
            return (self.source, self.target)
        return (self.target,)

    def identity_changed(self, other: ConduitConfig) -> bool:
        """Whether source, target or mode differ: that resets the baseline."""
        return (self.source, self.target, self.mode) != (
            other.source,
            other.target,
            other.mode,
        )


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded, valid config: what the daemon and the CLI work from."""

    daemon: DaemonConfig
    conduits: tuple[ConduitConfig, ...]
    path: Path
    warnings: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The conduits' names, in config order."""
        return tuple(conduit.name for conduit in self.conduits)

    def conduit(self, name: str) -> ConduitConfig:
        """The conduit called `name`.

        Raises:
            UsageError: no conduit has that name; the message lists them.
        """
        for conduit in self.conduits:
            if conduit.name == name:
                return conduit
        known = ", ".join(self.names) or "none"
        raise UsageError(
            f"no conduit named {name!r} in {self.path}; configured: {known}"
        )
