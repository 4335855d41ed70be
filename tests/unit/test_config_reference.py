"""The generated configuration reference is complete and up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduitd.config import ConduitConfig, DaemonConfig, load_config, render_reference
from conduitd.config.reference import EXAMPLE

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is stale; regenerate it with "
        "`PYTHONPATH=src python -m conduitd.config.reference > docs/configuration.md`"
    )


@pytest.mark.parametrize("model", [DaemonConfig, ConduitConfig])
def test_reference_documents_every_key_with_a_description(
    model: type[DaemonConfig | ConduitConfig],
) -> None:
    reference = render_reference()
    for name, field in model.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"| `{field.alias or name}` |" in reference


def test_reference_shows_defaults_and_allowed_values() -> None:
    reference = render_reference()
    assert '| `debounce` | duration | `"50ms"` |' in reference
    assert "| `mode` | one of `mirror`, `bidirectional`, `selective` |" in reference
    assert "| `parallel_transfers` | integer, 1..64 | `3` |" in reference
    assert '| `trash_max_bytes` | size or "" (no cap) | `""` |' in reference
    assert "| `name` | name | required |" in reference
    assert "Only used with mode bidirectional." in reference


def test_example_config_loads_without_problems_or_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    path = tmp_path / "conduitd.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    config = load_config(path)
    assert config.names == ("photos", "notes", "recent-docs")
    assert config.warnings == ()
    assert f"```toml\n{EXAMPLE}```" in render_reference()
