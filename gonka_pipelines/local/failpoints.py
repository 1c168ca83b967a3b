"""Named crash points for tests: GONKA_FAILPOINT=name makes the process die there, as a power cut would.

With GONKA_FAILPOINT_BUDGET naming a file that holds a count, the point fires only while the count is positive, taking
one each time (across processes, under a file lock): a test lets a worker die once, or every time, mid-stage.
"""

from __future__ import annotations

import fcntl
import os

FAILPOINT_ENV = "GONKA_FAILPOINT"
BUDGET_ENV = "GONKA_FAILPOINT_BUDGET"
CRASH_EXIT_CODE = 137


def failpoint(name: str) -> None:
    """Exit at once, without cleanup or commit, when the environment names this point (and its budget allows)."""
    if os.environ.get(FAILPOINT_ENV) == name and _take_one(os.environ.get(BUDGET_ENV)):
        os._exit(CRASH_EXIT_CODE)


def _take_one(budget: str | None) -> bool:
    """Whether the budget file (none: unlimited) still holds a crash; if so, take it."""
    if budget is None:
        return True
    try:
        with open(budget, "r+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            left = int(file.read().strip() or 0)
            if left <= 0:
                return False
            file.seek(0)
            file.truncate()
            file.write(str(left - 1))
            return True
    except FileNotFoundError:
        return False
