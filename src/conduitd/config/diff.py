"""What a reload changes: conduits added, removed, changed, unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from conduitd.config.models import Config


@dataclass(frozen=True, slots=True)
class ConduitDiff:
    """Conduit names by fate; `changed` includes those whose identity changed.

    Names of added, changed and unchanged conduits come in the new config's
    order, removed ones in the old config's order.
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


def diff_conduits(old: Config, new: Config) -> ConduitDiff:
    """Compare two configs' conduits by name (a renamed conduit is a new one).

    Use `ConduitConfig.identity_changed` on a changed conduit to learn whether
    its baseline resets (source, target or mode changed).
    """
    before = {conduit.name: conduit for conduit in old.conduits}
    after = {conduit.name: conduit for conduit in new.conduits}
    return ConduitDiff(
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=tuple(
            name for name in after if name in before and after[name] != before[name]
        ),
        unchanged=tuple(
            name for name in after if name in before and after[name] == before[name]
        ),
    )
