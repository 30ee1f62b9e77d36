"""Fixtures for the experiment-suite tests: a tmp result store and a tiny spec."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from experiments_fakes import TINY_SPEC
from fasa_cli.experiments.store import ResultStore


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "results")


@pytest.fixture
def tiny_spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY_SPEC))
    return path


@pytest.fixture
def tiny_spec(tiny_spec_path: Path):
    from fasa_cli.experiments.spec import load_spec

    return load_spec(tiny_spec_path)


@pytest.fixture
def eql_unbuilt(monkeypatch):
    """EQL as it was before it was built: these tests need a known method that is not built."""
    from fasa_cli.methods import api, registered_methods

    registered_methods()  # discover first, so the removal is not undone by discovery
    monkeypatch.delitem(api._REGISTERED, "eql")
