"""Fixtures shared by integration tests."""

from __future__ import annotations

from typing import Any

import pytest

from conduitd.sync import service as service_module


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per SQL comparison of two indexes a run makes (the number
    of paths it found), in the order they were made."""
    calls: list[int] = []
    real = service_module.differing_paths

    async def spy(*args: Any, **kwargs: Any) -> list[bytes]:
        found = await real(*args, **kwargs)
        calls.append(len(found))
        return found

    monkeypatch.setattr(service_module, "differing_paths", spy)
    return calls
