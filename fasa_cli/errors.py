"""User-facing errors: one line naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

EXIT_USER_ERROR = 2


class FasaError(Exception):
    """Bad input or an unmet precondition the user can fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.problem}. Fix: {self.fix}" if self.fix else f"{self.problem}."


class NotBuiltError(FasaError):
    """A capability the suite names but does not implement yet; it must not pretend to work."""

    def __init__(self, what: str):
        super().__init__(f"{what} is not built yet", "see the open issues in the project tracker")


class RunFailedError(Exception):
    """A training or evaluation run crashed; the message names its log. Exit code 1."""
