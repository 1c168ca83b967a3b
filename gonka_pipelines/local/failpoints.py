"""Named crash points for tests: GONKA_FAILPOINT=name makes the process die there, as a power cut would."""

from __future__ import annotations

import os

FAILPOINT_ENV = "GONKA_FAILPOINT"
CRASH_EXIT_CODE = 137


def failpoint(name: str) -> None:
    """Exit at once, without cleanup or commit, when the environment names this point."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os._exit(CRASH_EXIT_CODE)
