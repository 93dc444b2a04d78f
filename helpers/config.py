"""Run-time switches read from the environment (no side effects on import)."""

from __future__ import annotations

import os

FAST_ENV = "COURSE_FAST"


def fast_mode() -> bool:
    """True when ``COURSE_FAST=1``: notebooks use fewer epochs/rounds (CI sets it).

    Fast mode still trains on the real data; it only shortens schedules.
    """
    return os.environ.get(FAST_ENV, "").strip().lower() in ("1", "true", "yes")


def pick(full, fast):
    """``fast`` in fast mode, else ``full`` (for epochs, rounds, seeds...)."""
    return fast if fast_mode() else full
