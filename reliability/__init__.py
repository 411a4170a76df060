"""The reliability figures of issue 10 (``make reliability``, ``python -m reliability``):
soak, fuzz, forgery and replay, exhaustion, restart, printed as one table."""

from __future__ import annotations

from ._common import Row
from ._run import FULL, QUICK, Counts, render, run_all

__all__ = ["FULL", "QUICK", "Counts", "Row", "render", "run_all"]
