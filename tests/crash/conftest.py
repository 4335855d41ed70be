"""The crash suite's ledger: every trial is counted, and a table ends the run.

Tests ask for `crash_ledger` and record each trial under its hook (a crash
label, `sigkill` for the random kills of a daemon, or a durability check).
`pytest_terminal_summary` prints hook, trials, crashes, runs that never hit
the hook, restarts needed and violations, whatever the test outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from crash_ledger import CrashLedger, HookTally
from crash_run import close_servers

_LEDGER = pytest.StashKey[CrashLedger]()


@pytest.fixture(scope="session")
def crash_ledger(request: pytest.FixtureRequest) -> CrashLedger:
    ledger = request.config.stash.setdefault(_LEDGER, CrashLedger())
    return ledger


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _fork_servers() -> Iterator[None]:
    yield
    close_servers()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    ledger = config.stash.get(_LEDGER, None)
    if ledger is None or not ledger.hooks:
        return
    write = terminalreporter.write_line
    terminalreporter.section("crash suite (issue 8)")
    header = (
        f"{'hook':<28} {'trials':>6} {'crashed':>7} {'not hit':>7} "
        f"{'restarts 1/2':>12} {'violations':>10}"
    )
    write(header)
    write("-" * len(header))
    total = HookTally()
    for hook, tally in sorted(ledger.hooks.items()):
        restarts = f"{tally.restarts[1]}/{tally.restarts[2]}"
        write(
            f"{hook:<28} {tally.trials:>6} {tally.crashed:>7} {tally.not_hit:>7} "
            f"{restarts:>12} {tally.violations:>10}"
        )
        total.trials += tally.trials
        total.crashed += tally.crashed
        total.not_hit += tally.not_hit
        total.violations += tally.violations
        total.restarts.update(tally.restarts)
        total.kinds.update(tally.kinds)
    write("-" * len(header))
    restarts = f"{total.restarts[1]}/{total.restarts[2]}"
    write(
        f"{'total':<28} {total.trials:>6} {total.crashed:>7} {total.not_hit:>7} "
        f"{restarts:>12} {total.violations:>10}"
    )
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(total.kinds.items())) or "none"
    write(f"violations by kind: {kinds}")
    for what, count in sorted(ledger.counts.items()):
        write(f"{what}: {count}")
    for note in ledger.notes:
        write(note)
    for report in terminalreporter.stats.get("skipped", []):
        if "tests/crash/" in report.nodeid:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            write(f"skipped {report.nodeid.rsplit('::', 1)[-1]}: {reason}")
    write(f"crash suite time: {time.monotonic() - ledger.started:.1f} s")
    for line in ledger.details[:30]:
        write(f"  {line}")
