"""A copier with hooks, for tests that change a tree while a run copies it."""

from __future__ import annotations

from typing import Any

from conduitd.jobs.copy import TempFile, copy_to_temp


class SeamCopier:
    """`copy_to_temp` with hooks (run in the copy's worker thread).

    `before(rel)` runs before a copy, `during(rel)` once between two chunks
    of it, `after(rel)` once the temp file is complete.
    """

    def __init__(self, before: Any = None, after: Any = None, during: Any = None):
        self.before, self.after, self.during = before, after, during

    def __call__(self, src: Any, rel: bytes, *args: Any, **kwargs: Any) -> TempFile:
        if self.before is not None:
            self.before(rel)
        if self.during is not None:
            inner, fired = kwargs.get("checkpoint"), False

            def checkpoint() -> None:
                nonlocal fired
                if not fired:
                    fired = True
                    self.during(rel)
                if inner is not None:
                    inner()

            kwargs["checkpoint"] = checkpoint
        temp = copy_to_temp(src, rel, *args, **kwargs)
        if self.after is not None:
            self.after(rel)
        return temp
