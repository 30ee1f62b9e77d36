"""Every bad input or environment problem is one line `error: <problem>. Fix: <fix>` with
exit code 2, never a traceback (issue 9)."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fasa_cli import __version__
from fasa_cli.cli import main


@pytest.fixture(autouse=True)
def never_train(monkeypatch, tmp_path):
    """These tests must fail before any run starts: a runner call is a test failure, and
    results and data default to tmp folders, never the repository."""
    from fasa_cli.commands import experiments as commands

    def refuse():
        raise AssertionError("a bad-input test reached the training runner")

    monkeypatch.setattr(commands, "RUNNER_FACTORY", refuse)
    monkeypatch.setenv("FASA_RESULTS_DIR", str(tmp_path / "default-results"))
    monkeypatch.setenv("FASA_DATA_DIR", str(tmp_path / "default-data"))


def one_error_line(code, out, err) -> str:
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# -- --version, not-built message -------------------------------------------------------------------


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"fasa {__version__}"


def test_not_built_names_what_is_built():
    # A unit test: which methods are unbuilt changes as they land, and a CLI call naming one
    # that has become built would start training.
    from fasa_cli import registry
    from fasa_cli.errors import NotBuiltError

    built = [name for name, entry in registry.METHODS.items() if entry.built]
    line = NotBuiltError("method 'zzz' (paper Table 2)").line()
    assert line.startswith("method 'zzz' (paper Table 2) is not built yet. Fix: ")
    assert f"built methods: {', '.join(built)}" in line and "README's status table" in line
    assert "open issues" not in line and "\n" not in line
    # Not a registry kind: still one line pointing at the status table.
    assert "README's status table" in NotBuiltError("the classification path").line()


# -- seeds ----------------------------------------------------------------------------------------


def test_negative_train_seed_is_refused_before_anything(run_cli, tmp_path):
    code, out, err = run_cli("train", "table1", "--row", "baseline", "--seed", "-1", "--results-dir", tmp_path / "r")
    assert code == 2 and "Traceback" not in out + err and "--seed" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("seeds", "expected"), [("", "--seeds is empty"), ("0,,1", "empty item"), (" ", "--seeds is empty"),
                                                  ("0,1,", "empty item")])
def test_bad_seed_lists_are_errors(run_cli, tmp_path, seeds, expected):
    err = one_error_line(*run_cli("ablate", "table1", "--seeds", seeds, "--results-dir", tmp_path / "r"))
    assert expected in err
    assert not (tmp_path / "r" / "runs").exists()
    err = one_error_line(*run_cli("compare", "--baselines", "rfs", "--seeds", seeds, "--results-dir", tmp_path / "r"))
    assert expected in err


def test_parse_seeds_and_csv():
    from fasa_cli.errors import FasaError
    from fasa_cli.experiments.spec import parse_csv, parse_seeds

    assert parse_seeds(None) is None and parse_seeds(" 2, 0") == [2, 0]
    for bad in ("", "0,,1", ",", "1,"):
        with pytest.raises(FasaError):
            parse_seeds(bad)
    assert parse_csv("a,,b") == ["a", "b"] and parse_csv(None) == []
    with pytest.raises(FasaError, match="--rows 'a,,b' has an empty item"):
        parse_csv("a,,b", "--rows")
    with pytest.raises(FasaError, match="--rows is empty"):
        parse_csv("", "--rows")


# -- specs ----------------------------------------------------------------------------------------


def test_non_utf8_spec_is_one_line(run_cli, tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_bytes("title: caf\u00e9\n".encode("latin-1"))
    err = one_error_line(*run_cli("train", spec, "--results-dir", tmp_path / "r"))
    assert str(spec) in err and "not UTF-8" in err and "0xe9" in err


# -- results folder: read-only, full, under a file, /dev/null ---------------------------------------


def test_results_dir_under_a_file_is_one_line(run_cli, tmp_path):
    (tmp_path / "file").write_text("x")
    err = one_error_line(*run_cli("report", "--results-dir", tmp_path / "file" / "results"))
    assert "ENOTDIR" in err and str(tmp_path / "file") in err and "--results-dir" in err


def test_results_dir_dev_null_is_one_line(run_cli, monkeypatch):
    monkeypatch.setenv("FASA_RESULTS_DIR", "/dev/null")
    err = one_error_line(*run_cli("report"))
    assert "/dev/null" in err and "FASA_RESULTS_DIR" in err


@pytest.mark.parametrize(("code", "name"), [(errno.ENOSPC, "ENOSPC"), (errno.EROFS, "EROFS"), (errno.EACCES, "EACCES")])
def test_unwritable_results_dir_is_one_line(run_cli, tmp_path, monkeypatch, code, name):
    """Tests run as root, where chmod denies nothing: simulate the kernel's answer instead."""
    import builtins
    import io

    target = tmp_path / "r"
    target.mkdir()

    def inside(path) -> bool:
        return str(os.fspath(path)).startswith(str(target))

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    real_open, real_mkdir, real_os_open = builtins.open, os.mkdir, os.open

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "open", fake_os_open)
    err = one_error_line(*run_cli("report", "--results-dir", target))
    assert name in err and str(target) in err and "Fix:" in err


def test_os_error_without_a_path_still_names_the_reason():
    from fasa_cli.errors import os_error

    line = os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))).line()
    assert line.startswith("No space left on device (ENOSPC)") and "Fix: free disk space" in line


# -- run folders: eval and tide with a bad run_config.json -------------------------------------------


def _run_folder(tmp_path: Path, config: str | bytes) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run_config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    (folder / "detections.json.gz").write_bytes(b"")
    return folder


@pytest.mark.parametrize("command", ["eval", "tide"])
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ('{"dataset": "embedded-tiny", "profile": "cpu-compact", "fasa": {"scale": "big"}}', "field 'fasa.scale'"),
        ('{"dataset": "embedded-tiny"}', "field 'profile': missing required key"),
        ('{"dataset": "embedded-tiny", "profile": "cpu-compact", "colour": 1}', "field 'colour': unknown key"),
        ('{"dataset": "embedded-tiny", ', "not valid JSON"),
        (b'{"dataset": "\xff"}', "run_config.json"),
    ],
)
def test_bad_run_config_names_the_field(run_cli, tmp_path, command, config, expected):
    folder = _run_folder(tmp_path, config)
    err = one_error_line(*run_cli(command, folder))
    assert expected in err and "run_config.json" in err
    assert "For further information" not in err and "errors.pydantic.dev" not in err


def test_root_handler_turns_pydantic_and_unicode_errors_into_one_line():
    from pydantic import ValidationError

    from fasa_cli.cli import _as_user_error
    from fasa_cli.runconfig import RunConfig

    try:
        RunConfig.model_validate({"dataset": "embedded-tiny", "profile": "cpu-compact", "train": {"epochs": 0}})
    except ValidationError as err:
        line = _as_user_error(err).line()
    assert "field 'train.epochs'" in line and "greater than or equal to 1" in line
    assert "pydantic.dev" not in line
    try:
        b"\xff".decode("utf-8")
    except UnicodeDecodeError as err:
        assert "not UTF-8" in _as_user_error(err).line()
    assert _as_user_error(KeyError("x")) is None  # a bug stays a traceback


# -- doctor -----------------------------------------------------------------------------------------


def test_doctor_lvis_needs_the_val_json_and_images(tmp_path, monkeypatch):
    from fasa_cli.commands.doctor import _datasets

    root = tmp_path / "lvis"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "lvis_v1_train.json").write_text("{}")
    monkeypatch.setenv("FASA_LVIS_ROOT", str(root))
    lvis = {name: (present, where) for name, present, where in _datasets()}["lvis_v1"]
    assert lvis[0] is False and "lvis_v1_val.json" in lvis[1] and "train2017" in lvis[1]
    (root / "annotations" / "lvis_v1_val.json").write_text("{}")
    for split in ("train2017", "val2017"):
        (root / "coco" / split).mkdir(parents=True)
    assert {name: present for name, present, _ in _datasets()}["lvis_v1"] is True


# -- strict JSON output -----------------------------------------------------------------------------


def test_write_json_writes_nan_as_null_atomically(tmp_path):
    import numpy as np

    from fasa_cli.jsonio import dumps_json, write_json

    doc = {"AP": math.nan, "E": [math.inf, -math.inf, 1.5], "n": np.float32(2.5), "k": np.int64(3)}
    assert json.loads(dumps_json(doc)) == {"AP": None, "E": [None, None, 1.5], "k": 3, "n": 2.5}
    target = tmp_path / "metrics.json"
    target.write_text("old")
    write_json(target, doc)
    assert "NaN" not in target.read_text() and json.loads(target.read_text())["AP"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_fasa_binary_prints_one_line_for_bad_input(tmp_path):
    """The installed entry point too (not only in-process)."""
    fasa = Path(sys.executable).with_name("fasa")
    if not fasa.exists():
        pytest.skip("no installed `fasa` script")
    out = subprocess.run([str(fasa), "ablate", "table1", "--seeds", "0,,1", "--results-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.startswith("error: ")
    out = subprocess.run([str(fasa), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"fasa {__version__}"
