"""CLI commands, one module per family; each is thin and calls into the library."""

from rich.console import Console


def wide_console() -> Console:
    """A console for tables: logs and pipes get a wide page instead of rich's 80 columns."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=200)
