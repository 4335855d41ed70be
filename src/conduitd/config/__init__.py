"""The config layer: TOML schema, loading, validation, defaults, reload diff.

Names are imported on first use: `reload` and `stop` need only
`resolve_config_path` and `read_state_dir_leniently`, which must not pull
in pydantic (see BENCHMARKING.md on import costs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from conduitd.config.diff import ConduitDiff, diff_conduits
    from conduitd.config.enums import (
        ConflictStrategy,
        DeleteStrategy,
        LogFormat,
        LogLevel,
        ScheduleKind,
        SyncMode,
    )
    from conduitd.config.loading import load_config
    from conduitd.config.models import ConduitConfig, Config, DaemonConfig
    from conduitd.config.paths import (
        default_state_dir,
        read_state_dir_leniently,
        resolve_config_path,
    )
    from conduitd.config.reference import render_reference
    from conduitd.config.schedule import Schedule, cron_trigger_fields, parse_schedule
    from conduitd.config.units import (
        MinFree,
        format_duration,
        format_size,
        parse_duration,
        parse_min_free,
        parse_size,
    )

_HOMES: Final = {
    "ConduitDiff": "diff",
    "diff_conduits": "diff",
    "ConflictStrategy": "enums",
    "DeleteStrategy": "enums",
    "LogFormat": "enums",
    "LogLevel": "enums",
    "ScheduleKind": "enums",
    "SyncMode": "enums",
    "load_config": "loading",
    "ConduitConfig": "models",
    "Config": "models",
    "DaemonConfig": "models",
    "default_state_dir": "paths",
    "read_state_dir_leniently": "paths",
    "resolve_config_path": "paths",
    "render_reference": "reference",
    "Schedule": "schedule",
    "cron_trigger_fields": "schedule",
    "parse_schedule": "schedule",
    "MinFree": "units",
    "format_duration": "units",
    "format_size": "units",
    "parse_duration": "units",
    "parse_min_free": "units",
    "parse_size": "units",
}

__all__ = [
    "ConduitConfig",
    "ConduitDiff",
    "Config",
    "ConflictStrategy",
    "DaemonConfig",
    "DeleteStrategy",
    "LogFormat",
    "LogLevel",
    "MinFree",
    "Schedule",
    "ScheduleKind",
    "SyncMode",
    "cron_trigger_fields",
    "default_state_dir",
    "diff_conduits",
    "format_duration",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_min_free",
    "parse_schedule",
    "parse_size",
    "read_state_dir_leniently",
    "render_reference",
    "resolve_config_path",
]


def __getattr__(name: str) -> object:
    """Import the module that holds `name` on first use (PEP 562)."""
    try:
        module = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
