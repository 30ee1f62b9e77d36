"""`fasa ablate|compare|report` through the real entry point: exit codes and one-line errors."""

from __future__ import annotations

import pytest

from experiments_fakes import FakeRunner
from fasa_cli.commands import experiments as commands

cli = pytest.importorskip("fasa_cli.cli")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def fake_runner(monkeypatch) -> FakeRunner:
    runner = FakeRunner()
    monkeypatch.setattr(commands, "RUNNER_FACTORY", lambda: runner)
    return runner


def test_ablate_runs_then_skips_and_writes_the_table(tiny_spec_path, tmp_path, fake_runner, capsys):
    results = tmp_path / "results"
    code, out, err = _run(["ablate", str(tiny_spec_path), "--seeds", "0", "--results-dir", str(results)], capsys)
    assert code == 0, err
    assert len(fake_runner.calls) == 3 and "Tiny ablation" in out
    table = (results / "tables" / "tiny--cpu-compact--embedded-tiny.md").read_text()
    assert "(ours: profile cpu-compact, dataset embedded-tiny)" in table and "1/2 seeds" in table
    assert len(list(results.glob("records/tiny/cpu-compact--embedded-tiny/*/seed0.json"))) == 3
    code, out, _ = _run(["ablate", str(tiny_spec_path), "--seeds", "0", "--results-dir", str(results)], capsys)
    assert code == 0 and len(fake_runner.calls) == 3  # nothing re-run
    code, _, err = _run(["report", "--results-dir", str(results)], capsys)
    assert code == 0 and (results / "REPORT.md").is_file()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["ablate", "table99"], ["unknown spec 'table99'", "table1"]),
        (["ablate", "table4"], ["method 'eql'", "not built", "--rows"]),
        (["ablate", "table1", "--profile", "lvis-r101"], ["does not run under profile"]),
        (["ablate", "table1", "--seeds", "a,b"], ["--seeds"]),
        (["ablate", "table1", "--rows", "nope"], ["no row 'nope'"]),
        (["compare", "--baselines", "smoteish"], ["unknown method 'smoteish'", "rfs"]),
        (["compare", "--baselines", "rfs,eql", "--with", "fasa"], ["method 'eql'", "not built"]),
        (["compare", "--baselines", "rfs", "--with", "moex"], ["--with 'moex'"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_runs_nothing(argv, words, tmp_path, fake_runner, capsys, eql_unbuilt):
    code, _, err = _run([*argv, "--results-dir", str(tmp_path / "r")], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    assert fake_runner.calls == []


def test_malformed_spec_keeps_finished_results(tiny_spec_path, tmp_path, fake_runner, capsys):
    results = tmp_path / "results"
    assert _run(["ablate", str(tiny_spec_path), "--seeds", "0", "--results-dir", str(results)], capsys)[0] == 0
    before = sorted(p.read_bytes() for p in results.glob("records/**/seed*.json"))
    assert len(before) == 3
    tiny_spec_path.write_text(tiny_spec_path.read_text().replace("fasa: {adaptive: true}", "fasa: {adaptive: true"))
    code, _, err = _run(["ablate", str(tiny_spec_path), "--results-dir", str(results)], capsys)
    assert code == 2 and f"{tiny_spec_path}:" in err and "malformed YAML" in err
    assert sorted(p.read_bytes() for p in results.glob("records/**/seed*.json")) == before


def test_compare_with_fasa_builds_paired_rows(tmp_path, fake_runner, capsys):
    results = tmp_path / "results"
    code, out, err = _run(["compare", "--baselines", "rfs", "--with", "fasa", "--seeds", "0",
                           "--results-dir", str(results)], capsys)
    assert code == 0, err
    assert len(fake_runner.calls) == 4
    table = (results / "tables" / "compare--rfs--with-fasa--cpu-compact--embedded-small.md").read_text()
    for label in ("Baseline", "Baseline + FASA", "Repeat factor sampling, threshold 1e-3 + FASA"):
        assert f"| {label} |" in table
