"""Where the source checkout is: the default home of specs, results and generated data."""

from __future__ import annotations

from pathlib import Path


def repo_root() -> Path | None:
    """The folder holding pyproject.toml above this package (None when installed elsewhere)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return None
