"""`python -m conduitd` runs the command line."""

from __future__ import annotations

from conduitd.cli import main

main()
