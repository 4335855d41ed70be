"""Read an `strace -f -yy` log and check the group commit's order, file by file.

DESIGN.md "Jobs and durability": temp files durable → renames → directories
durable → only then the rows that say "synced". In syscalls, for every temp
file renamed onto a final name under the target root:
- data: after the temp's last write (or its creation), a `syncfs` of the
  target filesystem or an `fsync`/`fdatasync` of the temp itself (of its
  directory for a symlink, which cannot be opened) completed before the
  rename started;
- directory: after the rename, a `syncfs` of the target or an `fsync` of the
  final name's directory completed before the next write to `library.db-wal`
  (a row that says synced) started;
- trash: an old version hard-linked into trash was made durable (syncfs, or
  fsync of its trash directory) before the rename that replaced it;
- deletes: a version renamed into trash was made durable (both directories)
  before the next write to the WAL.

Each call is placed by the position of its start and end in the log: strace
prints `<unfinished ...>` and `<... resumed>` when threads interleave, so a
call A finished before B started exactly when A's end line precedes B's
start line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

TRACED = (
    "fsync,fdatasync,syncfs,rename,renameat,renameat2,link,linkat,openat,"
    "pwrite64,write,symlinkat,unlinkat"
)
_COMPLETE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(.*)$")
_UNFINISHED = re.compile(r"^(\d+)\s+(\w+)\((.*?)\s*<unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(.*)$")
_OPERAND = re.compile(r'(?:(?:\d+|AT_FDCWD)<([^>]*)>)|"((?:[^"\\]|\\.)*)"')
_FD_PATH = re.compile(r"^(?:\d+)<([^>]*)>")
_WRITES = ("pwrite64", "write", "pwritev", "pwritev2", "writev")
_SYNCS = ("fsync", "fdatasync")


@dataclass(frozen=True, slots=True)
class Call:
    """One system call: where it started and ended in the log."""

    start: int
    end: int
    pid: int
    name: str
    args: str
    result: str

    @property
    def ok(self) -> bool:
        return not self.result.startswith("-1")

    @property
    def injected(self) -> bool:
        return "(INJECTED)" in self.result

    def operands(self) -> list[str]:
        """Descriptor paths and string arguments, in order."""
        return [fd or text for fd, text in _OPERAND.findall(self.args)]

    def fd_path(self) -> str:
        """The path of the first argument's descriptor ("" if none)."""
        found = _FD_PATH.match(self.args)
        return found.group(1) if found else ""

    def result_path(self) -> str:
        found = _FD_PATH.match(self.result)
        return found.group(1) if found else ""

    def two_paths(self) -> tuple[str, str]:
        """(old, new) of rename/renameat/renameat2/link/linkat."""
        ops = self.operands()
        if self.name in ("rename", "link"):
            return ops[0], ops[1]
        return join(ops[0], ops[1]), join(ops[2], ops[3])


def join(directory: str, name: str) -> str:
    return name if name.startswith("/") else f"{directory.rstrip('/')}/{name}"


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def parse(text: str) -> list[Call]:
    """Calls of an `strace -f -yy -o` log, unfinished/resumed pairs joined."""
    calls: list[Call] = []
    pending: dict[int, tuple[str, str, int]] = {}
    for index, line in enumerate(text.splitlines()):
        if found := _COMPLETE.match(line):
            pid, name, args, result = found.groups()
            calls.append(Call(index, index, int(pid), name, args, result))
        elif found := _UNFINISHED.match(line):
            pid, name, args = found.groups()
            pending[int(pid)] = (name, args, index)
        elif found := _RESUMED.match(line):
            pid, name, rest, result = found.groups()
            started = pending.pop(int(pid), None)
            if started is None:
                continue
            _, head, start = started
            calls.append(Call(start, index, int(pid), name, head + rest, result))
    calls.sort(key=lambda c: c.start)
    return calls


@dataclass
class OrderReport:
    """What the check found: files checked, and every broken rule."""

    files: int = 0
    trashed: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _Trace:
    calls: list[Call]
    target: str
    wal: str

    def durable(
        self, after: int, before: int, paths: Iterable[str], *, data: bool = False
    ) -> bool:
        """A successful syncfs of the target, or an fsync of each of `paths`,
        started after position `after` and ended before position `before`."""
        window = [c for c in self.calls if c.start > after and c.end < before and c.ok]
        if any(c.name == "syncfs" and under(c.fd_path(), self.target) for c in window):
            return True
        synced = {c.fd_path() for c in window if c.name in _SYNCS}
        return all(p in synced for p in paths) and (bool(synced) or not data)

    def next_wal_write(self, after: int) -> Call | None:
        return next(
            (
                c
                for c in self.calls
                if c.start > after and c.name in _WRITES and c.fd_path() == self.wal
            ),
            None,
        )

    def data_ready(self, temp: str, before: int) -> tuple[int, str]:
        """Where the temp's content was complete (its last write, or creation),
        and what an fsync must name to make it durable: the file itself, or
        for a symlink (which cannot be opened) its directory."""
        last, durable_by = -1, temp
        for call in self.calls:
            if call.start >= before:
                break
            written = call.name in _WRITES and call.fd_path() == temp
            created = call.name == "openat" and call.result_path() == temp
            linked = call.name == "symlinkat" and join(*call.operands()[1:3]) == temp
            if written or created or linked:
                last = call.end
            if linked:
                durable_by = parent(temp)
        return last, durable_by


def check_order(text: str, target: str, library_wal: str) -> OrderReport:
    """Check every rename onto a final name under `target` (see module doc)."""
    trace = _Trace(parse(text), target.rstrip("/"), library_wal)
    internal = trace.target + "/.conduitd"
    tmp, trash = internal + "/tmp/", internal + "/trash/"
    report = OrderReport()
    renames = [
        c for c in trace.calls if c.ok and c.name in ("rename", "renameat", "renameat2")
    ]
    for call in renames:
        old, new = call.two_paths()
        if (
            old.startswith(tmp)
            and under(new, trace.target)
            and not under(new, internal)
        ):
            report.files += 1
            _check_put_in_place(trace, call, old, new, report)
        elif (
            under(old, trace.target)
            and not under(old, internal)
            and (new.startswith(trash))
        ):
            report.trashed += 1
            _check_durable_before_row(trace, call, [parent(old), parent(new)], report)
    for call in trace.calls:
        if call.ok and call.name in ("link", "linkat"):
            old, new = call.two_paths()
            if new.startswith(trash) and not under(old, internal):
                report.trashed += 1
                _check_link(trace, call, old, new, report)
    return report


def _check_put_in_place(
    trace: _Trace, rename: Call, temp: str, final: str, report: OrderReport
) -> None:
    ready, durable_by = trace.data_ready(temp, rename.start)
    if ready < 0:
        report.problems.append(f"{final}: its temp {temp} was never written")
    elif not trace.durable(ready, rename.start, [durable_by], data=True):
        report.problems.append(f"{final}: renamed before its data was durable")
    _check_durable_before_row(trace, rename, [parent(final)], report)


def _check_durable_before_row(
    trace: _Trace, call: Call, dirs: list[str], report: OrderReport
) -> None:
    _, new = call.two_paths()
    row = trace.next_wal_write(call.end)
    if row is None:
        report.problems.append(f"{new}: no row written after it")
    elif not trace.durable(call.end, row.start, dirs):
        report.problems.append(
            f"{new}: a row was written (log line {row.start}) before its "
            "directory was durable"
        )


def _check_link(
    trace: _Trace, link: Call, final: str, trashed: str, report: OrderReport
) -> None:
    replaced = next(
        (
            c
            for c in trace.calls
            if c.start > link.end
            and c.ok
            and c.name in ("rename", "renameat", "renameat2")
            and c.two_paths()[1] == final
        ),
        None,
    )
    if replaced is None:
        return  # the replacement was skipped: the link alone is harmless
    if not trace.durable(link.end, replaced.start, [parent(trashed)]):
        report.problems.append(
            f"{final}: replaced before its old version in trash was durable"
        )
