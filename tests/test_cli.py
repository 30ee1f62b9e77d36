"""The CLI surface: every command is listed, unbuilt capabilities refuse with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fasa_cli.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fasa_cli.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("train", "eval", "ablate", "compare", "tide", "report", "data", "doctor"):
        assert command in out.stdout


def test_unbuilt_method_is_one_line_exit_2_without_traceback():
    from fasa_cli import registry

    unbuilt = next((n for n, e in registry.METHODS.items() if not e.built), None)
    if unbuilt is None:
        pytest.skip("every method of the paper is built")
    out = run_cli("compare", "--baselines", unbuilt)
    assert out.returncode == 2
    assert "not built yet" in out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--baselines", "no_such_method"])
    assert exc.value.code == 2


def test_compiled_ops_run_on_cpu():
    """mmcv must be the full build: RoIAlign and NMS on CPU tensors (doctor's check)."""
    from fasa_cli.commands.doctor import check_compiled_ops

    ok, details = check_compiled_ops()
    assert ok, details


def test_roi_align_matches_a_hand_computed_average():
    import torch
    from mmcv.ops import RoIAlign

    feats = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    # One 2x2 output bin over the whole 4x4 map, aligned=False: each bin averages
    # bilinear samples; over a linear ramp that equals the value at the bin centre.
    roi = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]])
    out = RoIAlign((1, 1), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, roi)
    assert out.item() == pytest.approx(feats.mean().item(), abs=1e-5)


def test_metrics_table_shows_a_missing_metric_as_na():
    """A metric stored as null (NaN, e.g. APs with no small objects) must not crash `fasa train`'s
    summary after the record is already written."""
    from rich.console import Console

    from fasa_cli.commands.runs import _metrics_table

    console = Console(record=True, width=80)
    console.print(_metrics_table("t", {"AP": 0.25, "APs": None, "train_s_per_iter": 0.5}))
    text = console.export_text()
    assert "25.0" in text and "n/a" in text and "0.5" in text
