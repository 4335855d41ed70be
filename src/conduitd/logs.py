"""structlog setup: stderr only, JSON lines unless stderr is a TTY."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    import structlog


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once per process; stdout stays free for output."""
    import structlog

    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    # format_exc_info below turns exc_info into text before the renderer sees
    # it, so tracebacks are plain either way; naming the plain formatter keeps
    # them so without rich (see keep_rich_out_of_structlog).
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def keep_rich_out_of_structlog() -> None:
    """Make this process's first `import structlog` skip rich.

    `import structlog` imports rich and pygments when they are installed
    (~40 ms, a tenth of a one-shot `conduitd sync`), only for the pretty
    tracebacks of its console renderer, which our processor chain never
    calls. Call it before anything imports structlog; the process's own
    `import rich` still works.
    """
    if "structlog" not in sys.modules and "rich" not in sys.modules:
        sys.meta_path.insert(0, _StructlogWithoutRich())


class _StructlogWithoutRich:
    """A meta path finder for structlog alone, whose loader hides rich."""

    def find_spec(
        self,
        name: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if name != "structlog":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            # Not an importlib.abc.Loader subclass: importing that costs ~10 ms.
            spec.loader = cast("Loader", _RichHidden(spec.loader))
        return spec


class _RichHidden:
    """Runs a module's loader while `import rich` fails (a None in sys.modules)."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Put the real loader back first, so nothing outlives the import.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        hidden = "rich" not in sys.modules
        if hidden:
            sys.modules["rich"] = None  # type: ignore[assignment]  # the documented way to make an import fail
        try:
            self._loader.exec_module(module)
        finally:
            if hidden and sys.modules.get("rich", 0) is None:
                del sys.modules["rich"]
