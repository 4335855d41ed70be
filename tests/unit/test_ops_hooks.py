"""The on_error hook: run without a shell, a JSON summary on stdin, never fatal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conduitd.config import ConduitConfig
from conduitd.errors import SafetyRefusal
from conduitd.hooks import run_hook, with_error_hook
from conduitd.sync.service import Paused

HOOK = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"


def conduit(tmp_path: Path, *command: str) -> ConduitConfig:
    return ConduitConfig.model_validate(
        {
            "name": "photos",
            "source": str(tmp_path),
            "target": str(tmp_path / "t"),
            "on_error": list(command),
        }
    )


def generation(errors: int, status: str = "verified") -> dict[str, object]:
    return {
        "generation": 7,
        "errors_encountered": errors,
        "verification_status": status,
    }


async def test_a_generation_with_errors_runs_the_hook_with_its_summary(
    tmp_path: Path,
) -> None:
    out = tmp_path / "summary.json"
    config = conduit(tmp_path, sys.executable, "-c", HOOK, str(out))

    async def run() -> dict[str, object]:
        return generation(errors=2)

    result = await with_error_hook(config, run, lambda g: g)
    assert result == generation(errors=2)
    summary = json.loads(out.read_text())
    assert summary["outcome"] == "failed"
    assert summary["error"] == "2 path(s) failed in generation 7"
    assert summary["generation"] == generation(errors=2)


async def test_a_refusal_runs_the_hook_but_a_pause_does_not(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    config = conduit(tmp_path, sys.executable, "-c", HOOK, str(out))

    async def paused() -> None:
        raise Paused("conduit 'photos' is paused")

    with pytest.raises(Paused):
        await with_error_hook(config, paused, lambda _: None)
    assert not out.exists()

    async def refused() -> None:
        raise SafetyRefusal("conduit 'photos' refused: not enough free space")

    with pytest.raises(SafetyRefusal):
        await with_error_hook(config, refused, lambda _: None)
    assert json.loads(out.read_text())["outcome"] == "refused"


async def test_a_failing_or_missing_hook_never_changes_the_outcome(
    tmp_path: Path,
) -> None:
    for command in (
        (sys.executable, "-c", "raise SystemExit(5)"),
        (str(tmp_path / "no-such-program"),),
    ):
        config = conduit(tmp_path, *command)

        async def run() -> dict[str, object]:
            return generation(errors=0, status="failed:work_remains")

        assert await with_error_hook(config, run, lambda g: g) == generation(
            errors=0, status="failed:work_remains"
        )


async def test_a_hook_that_never_reads_its_input_is_only_logged() -> None:
    # More than a pipe holds: the write blocks until the hook closes its
    # stdin, then fails with EPIPE (a race with a small document).
    document = {"conduit": "photos", "outcome": "failed", "blob": "x" * (1 << 20)}
    hook = (sys.executable, "-c", "import os; os.close(0); raise SystemExit(3)")
    with capture_logs() as logs:
        await run_hook(hook, document)
    failed = [e for e in logs if e["event"] == "on_error_hook_failed"]
    assert [e.get("exit_code") for e in failed] == [3]
