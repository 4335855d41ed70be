"""Error families raised on purpose; `cli.py` maps each to an exit code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ConduitdError(Exception):
    """An error conduitd raises on purpose; its message is for the user."""

    kind = "error"
    exit_code = 1


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config document: where, what, and what is allowed."""

    file: str
    key: str
    message: str

    def render(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(ConduitdError):
    """The config cannot be used; carries every problem found."""

    kind = "config"
    exit_code = 2

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class UsageError(ConduitdError):
    """A command was called in a way that cannot work."""

    kind = "usage"
    exit_code = 2


class NotAvailableYet(UsageError):
    """A command whose machinery has not landed yet."""

    kind = "not_available"


class AlreadyRunning(ConduitdError):
    """Another daemon holds the state dir."""

    kind = "already_running"
    exit_code = 2


class SafetyRefusal(ConduitdError):
    """A run was refused before anything was touched (exit 3)."""

    kind = "refused"
    exit_code = 3


class Busy(SafetyRefusal):
    """Another process holds the lock."""

    kind = "busy"


class StorageError(ConduitdError):
    """A database operation failed."""

    kind = "storage"
    exit_code = 1


class NotLeader(StorageError):
    """This device does not hold the library's leader lease."""

    kind = "not_leader"


class TransferError(ConduitdError):
    """One path could not be transferred; the run goes on."""

    kind = "transfer"
    exit_code = 1


class UnsafePath(TransferError):
    """A path component that could escape a root (`..`, absolute, NUL)."""

    kind = "unsafe_path"
