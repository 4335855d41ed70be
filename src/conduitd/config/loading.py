"""Read a config file into a valid `Config`, or a ConfigError naming every problem."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TypeVar

from pydantic import BaseModel, ValidationError

from conduitd.config.fields import CONFIG_DIR_CONTEXT, show_value
from conduitd.config.models import ConduitConfig, Config, DaemonConfig
from conduitd.config.paths import (
    default_state_dir,
    read_state_dir_leniently,
    resolve_config_path,
)
from conduitd.config.problems import (
    KeyPath,
    key_path,
    problems_from_error,
    unknown_key_message,
)
from conduitd.config.validation import check_config
from conduitd.errors import ConfigError, ConfigProblem

__all__ = [
    "default_state_dir",
    "load_config",
    "read_state_dir_leniently",
    "resolve_config_path",
]

Model = TypeVar("Model", bound=BaseModel)

_TOP_LEVEL_KEYS: Final = ("daemon", "conduit")
# tomllib names keys as Python tuples: "Cannot declare ('conduit', 'x') twice".
_TOML_KEY_TUPLE_RE: Final = re.compile(r"\(((?:'[^']*',? ?)+)\)")
_TOML_POSITION_RE: Final = re.compile(
    r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$"
)


def load_config(path: Path) -> Config:
    """Load and validate the config at `path`.

    Raises:
        ConfigError: with every problem found: the file cannot be read or
            parsed, or any key is unknown, invalid or conflicts with another.
    """
    file = str(path)
    document = _parse_toml(_read_text(path, file), file)
    problems: list[ConfigProblem] = []
    daemon_table, conduit_tables = _split_document(document, file, problems)
    absolute = path.absolute()
    context = {CONFIG_DIR_CONTEXT: absolute.parent}

    daemon = _validate(DaemonConfig, daemon_table, ("daemon",), file, context, problems)
    conduits: list[tuple[int, ConduitConfig]] = []
    for index, table in conduit_tables:
        prefix = ("conduit", index)
        conduit = _validate(ConduitConfig, table, prefix, file, context, problems)
        if conduit is not None:
            conduits.append((index, conduit))
    names = [
        (index, name)
        for index, table in conduit_tables
        if isinstance(name := table.get("name"), str)
    ]
    findings = check_config(file, daemon, conduits, names)
    problems.extend(findings.problems)
    if problems or daemon is None:
        raise ConfigError(problems)
    warnings = [problem.render() for problem in findings.warnings]
    if not conduit_tables:
        warnings.append(f"{file}: no [[conduit]] tables; there is nothing to sync")
    return Config(
        daemon=daemon,
        conduits=tuple(conduit for _, conduit in conduits),
        path=absolute,
        warnings=tuple(warnings),
    )


def _read_text(path: Path, file: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(
            file, "config file not found; create it or pass --config"
        ) from None
    except IsADirectoryError:
        raise _error(file, "is a directory, not a config file") from None
    except OSError as exc:
        raise _error(file, f"cannot read the config file: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _error(
            file,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column}); save the file as UTF-8",
        ) from None


def _parse_toml(text: str, file: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _error(file, _describe_toml_error(str(exc), text)) from None
    except RecursionError:  # tomllib recurses per nested array/table (issue 8)
        raise _error(file, "invalid TOML: values nested too deeply") from None


def _describe_toml_error(message: str, text: str) -> str:
    """'invalid TOML at line L, column C: <what>' from tomllib's message."""
    match = _TOML_POSITION_RE.search(message)
    what = message[: match.start()] if match else message
    what = _TOML_KEY_TUPLE_RE.sub(
        lambda keys: repr(".".join(re.findall(r"'([^']*)'", keys.group(1)))), what
    )
    if match and match.group(1):
        line, column = int(match.group(1)), int(match.group(2))
    else:
        # "at end of document": point just past the last character.
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    return f"invalid TOML at line {line}, column {column}: {what[:1].lower()}{what[1:]}"


def _split_document(
    document: Mapping[str, object], file: str, problems: list[ConfigProblem]
) -> tuple[object, list[tuple[int, dict[str, object]]]]:
    """The `[daemon]` table and the numbered `[[conduit]]` tables."""
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            message = unknown_key_message(key, _TOP_LEVEL_KEYS)
            problems.append(ConfigProblem(file, key_path((key,)), message))
    daemon = document.get("daemon", {})
    if not isinstance(daemon, dict):
        problems.append(
            ConfigProblem(
                file, "daemon", f"must be a [daemon] table, got {show_value(daemon)}"
            )
        )
    conduits = document.get("conduit", [])
    if not isinstance(conduits, list):
        problems.append(
            ConfigProblem(
                file,
                "conduit",
                f"must be an array of tables, got {show_value(conduits)}; "
                "write [[conduit]], not [conduit]",
            )
        )
        return daemon, []
    numbered: list[tuple[int, dict[str, object]]] = []
    for index, table in enumerate(conduits):
        if isinstance(table, dict):
            numbered.append((index, table))
        else:
            problems.append(
                ConfigProblem(
                    file,
                    f"conduit[{index}]",
                    f"must be a table, got {show_value(table)}",
                )
            )
    return daemon, numbered


def _validate(
    model: type[Model],
    table: object,
    prefix: KeyPath,
    file: str,
    context: dict[str, Path],
    problems: list[ConfigProblem],
) -> Model | None:
    """The validated model, or None with its problems appended."""
    if not isinstance(table, dict):
        return None  # reported by _split_document
    try:
        return model.model_validate(table, context=context)
    except ValidationError as exc:
        problems.extend(problems_from_error(exc, model, prefix, file))
        return None


def _error(file: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(file, "", message)])
