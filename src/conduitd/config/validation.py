"""Checks across keys and conduits, run once every value has parsed.

Errors reject the whole config; warnings (a key set where its mode or
schedule ignores it) are reported and the config is used.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from conduitd.config.enums import SyncMode
from conduitd.config.fields import OnlyFor
from conduitd.config.models import ConduitConfig, DaemonConfig
from conduitd.errors import ConfigProblem

# (index in the document, conduit): key paths name the index as written,
# and conduits that failed to parse are absent.
NumberedConduits = Sequence[tuple[int, ConduitConfig]]

_SHARED_RULE: Final = (
    "a root a conduit writes (its target, or either side of a bidirectional "
    "conduit) must not be, contain or lie inside another conduit's root"
)
_ROLES: Final = ("source", "target")


@dataclass(frozen=True, slots=True)
class Findings:
    """What the cross-field checks found: errors, and warnings that let it pass."""

    problems: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...]


def check_config(
    file: str,
    daemon: DaemonConfig | None,
    conduits: NumberedConduits,
    names: Sequence[tuple[int, str]] | None = None,
) -> Findings:
    """Run every cross-field check on the parts of a config that parsed.

    Args:
        names: every conduit's (index, name), including conduits that failed
            to parse, so a duplicate name is reported alongside their problems;
            taken from `conduits` when not given.
    """
    if names is None:
        names = [(index, conduit.name) for index, conduit in conduits]
    problems = [
        *_duplicate_names(file, names),
        *(p for i, conduit in conduits for p in _own_endpoints(file, i, conduit)),
        *_shared_roots(file, conduits),
        *(_state_dir_in_roots(file, daemon, conduits) if daemon else ()),
        *(p for i, conduit in conduits for p in _missing_selection(file, i, conduit)),
    ]
    warnings = [
        w for i, conduit in conduits for w in _other_mode_keys(file, i, conduit)
    ]
    return Findings(tuple(problems), tuple(warnings))


def _key(index: int, key: str) -> str:
    return f"conduit[{index}].{key}"


def _shown(path: Path) -> str:
    return repr(str(path))


def _relation(path: Path, other: Path) -> str | None:
    """How `path` relates to `other`: the same, inside, containing, or unrelated.

    By their components (what `is_relative_to` compares on POSIX), without
    building a relative path: a config is checked pair by pair, and with
    thousands of conduits `relative_to` took minutes.
    """
    mine, theirs = path.parts, other.parts
    if mine == theirs:
        return "is the same directory as"
    if len(mine) > len(theirs) and mine[: len(theirs)] == theirs:
        return "lies inside"
    if len(theirs) > len(mine) and theirs[: len(mine)] == mine:
        return "contains"
    return None


def _root(conduit: ConduitConfig, role: str) -> Path:
    return conduit.source if role == "source" else conduit.target


def _writes(conduit: ConduitConfig, role: str) -> bool:
    return role == "target" or conduit.mode is SyncMode.BIDIRECTIONAL


def _duplicate_names(
    file: str, names: Sequence[tuple[int, str]]
) -> Iterator[ConfigProblem]:
    first_index: dict[str, int] = {}
    for index, name in names:
        if name in first_index:
            yield ConfigProblem(
                file,
                _key(index, "name"),
                f"{name!r} is already the name of conduit[{first_index[name]}]; "
                "names must be unique",
            )
        else:
            first_index[name] = index


def _own_endpoints(
    file: str, index: int, conduit: ConduitConfig
) -> Iterator[ConfigProblem]:
    relation = _relation(conduit.target, conduit.source)
    if relation is not None:
        yield ConfigProblem(
            file,
            _key(index, "target"),
            f"{_shown(conduit.target)} {relation} source {_shown(conduit.source)}; "
            "source and target must be separate, unnested directories",
        )


def _shared_roots(file: str, conduits: NumberedConduits) -> Iterator[ConfigProblem]:
    """A written root equal to, containing or inside another conduit's root.

    Reported on the later conduit. Read-only sources may be shared.
    """
    for (i, earlier), (j, later) in itertools.combinations(conduits, 2):
        for role_a, role_b in itertools.product(_ROLES, _ROLES):
            if not (_writes(earlier, role_a) or _writes(later, role_b)):
                continue
            root_a, root_b = _root(earlier, role_a), _root(later, role_b)
            relation = _relation(root_b, root_a)
            if relation is not None:
                yield ConfigProblem(
                    file,
                    _key(j, role_b),
                    f"{_shown(root_b)} {relation} conduit[{i}].{role_a} "
                    f"{_shown(root_a)} ({earlier.name!r}); {_SHARED_RULE}",
                )


def _state_dir_in_roots(
    file: str, daemon: DaemonConfig, conduits: NumberedConduits
) -> Iterator[ConfigProblem]:
    state_dir = Path(os.path.realpath(daemon.state_dir))
    for index, conduit in conduits:
        for role in _ROLES:
            root = _root(conduit, role)
            relation = _relation(state_dir, root)
            if relation is not None:
                yield ConfigProblem(
                    file,
                    "daemon.state_dir",
                    f"{_shown(daemon.state_dir)} {relation} conduit[{index}].{role} "
                    f"{_shown(root)}; the state dir must lie outside every root",
                )


def _missing_selection(
    file: str, index: int, conduit: ConduitConfig
) -> Iterator[ConfigProblem]:
    selective = conduit.mode is SyncMode.SELECTIVE
    if selective and not conduit.include and conduit.recent_s is None:
        yield ConfigProblem(
            file,
            _key(index, "include"),
            "a selective conduit needs include patterns, recent, or both; "
            "set at least one (or use mode mirror)",
        )


def _other_mode_keys(
    file: str, index: int, conduit: ConduitConfig
) -> Iterator[ConfigProblem]:
    """Keys set explicitly that this conduit's mode or schedule ignores."""
    kind = conduit.schedule.kind
    for name, info in type(conduit).model_fields.items():
        only = next((m for m in info.metadata if isinstance(m, OnlyFor)), None)
        if only is None or name not in conduit.model_fields_set:
            continue
        if only.applies(conduit.mode, kind):
            continue
        this = f"mode {conduit.mode}" if only.modes else f"schedule {kind}"
        yield ConfigProblem(
            file,
            _key(index, info.alias or name),
            f"ignored: only used with {only.describe()} (this conduit: {this})",
        )
