"""A rich progress bar on stderr that can be switched off (tests, pre-flight checks)."""

from __future__ import annotations


class ProgressBar:
    """A transient rich progress bar on stderr, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(stderr=True)
            if not console.is_terminal:
                return  # a log or pipe would only get blank lines from a transient bar
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=console, transient=True)
            self.task = self.bar.add_task(label, total=total)

    def __enter__(self) -> "ProgressBar":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)
