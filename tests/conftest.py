"""Shared fixtures. Tests keep every result and dataset under pytest's tmp folders unless a
fixture says otherwise; the embedded `tiny` data is generated once per session."""

from __future__ import annotations

import os

import pytest

# One thread per test process: pytest runs two of them (pyproject's addopts), which fill a
# 2-core machine, and a fixed count keeps the pinned tiny run identical on machines of any
# size (training reads FASA_NUM_THREADS). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FASA_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """Parent folder holding the generated `tiny` dataset for this test session."""
    root = tmp_path_factory.mktemp("fasa-data")
    previous = os.environ.get("FASA_DATA_DIR")
    os.environ["FASA_DATA_DIR"] = str(root)
    from fasa_cli.data import ensure_embedded

    ensure_embedded(preset="tiny", seed=0, progress=False)
    yield root
    if previous is None:
        os.environ.pop("FASA_DATA_DIR", None)
    else:
        os.environ["FASA_DATA_DIR"] = previous


@pytest.fixture
def run_cli(capsys):
    """Run `fasa ...` in-process through the real entry point; (exit code, stdout, stderr)."""
    from fasa_cli.cli import main

    def run(*argv: str):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
