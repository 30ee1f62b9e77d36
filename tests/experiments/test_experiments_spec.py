"""Spec loading: every paper table loads, names resolve, and mistakes point at file:line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fasa_cli.errors import FasaError, NotBuiltError
from fasa_cli.runconfig import FASASettings, RunConfig
from fasa_cli.experiments.spec import available_specs, deep_merge, load_spec, parse_seeds

PAPER_TABLES = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "15"}


def test_every_paper_table_has_a_spec_that_loads_and_resolves():
    names = available_specs()
    tables = set()
    for name in names:
        spec = load_spec(name)
        tables.add(spec.table)
        hashes = set()
        for profile in spec.profiles:
            for row in spec.runnable_rows():
                config = spec.resolve(row.name, profile)
                assert config.profile == profile and config.dataset == spec.dataset[profile]
                hashes.add((profile, config.config_hash()))
        # Rows of one spec must differ, or the ablation measures nothing.
        assert len(hashes) == len(spec.profiles) * len(spec.runnable_rows()), name
    assert PAPER_TABLES <= tables


def test_table1_rows_and_paper_numbers_are_the_papers():
    spec = load_spec("table1")
    expected = {
        "baseline": (20.8, 8.0, 20.2, 27.0),
        "fa": (22.3, 12.7, 21.7, 26.9),
        "fa_fs": (23.7, 17.8, 22.9, 27.2),
    }
    for name, numbers in expected.items():
        assert tuple(spec.row(name).paper[m] for m in ("AP", "APr", "APc", "APf")) == numbers
    assert spec.baseline_row().name == "baseline"
    compact = {r.name: spec.resolve(r.name, "cpu-compact") for r in spec.rows}
    assert compact["baseline"].fasa is None and compact["baseline"].method == "baseline"
    assert compact["fa"].fasa.adaptive is False and compact["fa_fs"].fasa.adaptive is True
    assert spec.resolve("baseline", "lvis-r50").method == "rfs"  # the paper's RFS baseline
    assert spec.resolve("baseline").profile == "cpu-compact"  # first profile is the default


def test_table3_static_scales_and_table10_metric_columns():
    table3 = load_spec("table3")
    assert [table3.resolve(f"static_s{s}").fasa.scale for s in (1, 5, 15)] == [1, 5, 15]
    assert table3.resolve("adaptive").fasa.adaptive
    table10 = load_spec("table10")
    assert table10.metrics_for("cpu-compact") == ["AP", "APr", "APc", "APf"]
    assert table10.metrics_for("cifar-resnet32") == ["accuracy"]
    assert table10.resolve("val_metric").fasa.signal == "metric"
    assert table10.resolve("val_loss", "cifar-resnet32").task == "classification"
    assert load_spec("table11").resolve("class").fasa.adapt_by == "class"


def test_fasa_settings_defaults_mirror_the_core_config():
    core = pytest.importorskip("fasa_cli.core.config")
    core_defaults = {f.name: f.default for f in dataclasses.fields(core.FASAConfig) if f.default is not dataclasses.MISSING}
    ours = FASASettings().core_settings()  # the validation-pass fields are the hook's
    assert ours, "no settings"
    for name, value in ours.items():
        assert core_defaults[name] == value, name
    # And the core accepts our dump as its `fasa:` block.
    core.FASAConfig.from_mapping(num_classes=3, feat_dim=4, settings=ours)


def test_config_hash_is_stable_and_sensitive():
    a = RunConfig(dataset="embedded-tiny", profile="cpu-compact", fasa={"scale": 5, "adaptive": False})
    b = RunConfig.model_validate({"fasa": {"adaptive": False, "scale": 5.0}, "profile": "cpu-compact", "dataset": "embedded-tiny"})
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != a.model_copy(update={"method": "rfs"}).config_hash()
    assert len(a.config_hash()) == 12


def test_spelling_a_methods_defaults_out_keeps_its_config_hash():
    # Table 2 spells MoEx's defaults out; `fasa compare --baselines moex` leaves them implicit.
    plain = RunConfig(dataset="embedded-small", profile="cpu-compact", method="moex")
    spelled = RunConfig(dataset="embedded-small", profile="cpu-compact", method="moex",
                        method_args={"p": 1.0, "eps": 1e-5})
    assert spelled.method_args == {}
    assert spelled.config_hash() == plain.config_hash()
    changed = RunConfig(dataset="embedded-small", profile="cpu-compact", method="moex", method_args={"p": 0.5})
    assert changed.method_args == {"p": 0.5} and changed.config_hash() != plain.config_hash()


def test_every_committed_record_is_keyed_by_its_own_config():
    # Reuse finds records by hash: a hash rule change must re-key the store in the same commit.
    records = sorted((Path(__file__).parents[2] / "results" / "records").rglob("seed*.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        assert RunConfig(**record["config"]).config_hash() == record["config_hash"], path


def test_deep_merge_recurses_and_null_removes():
    base = {"fasa": {"scale": 5, "adaptive": False}, "method": "baseline"}
    assert deep_merge(base, {"fasa": {"scale": 1}}) == {"fasa": {"scale": 1, "adaptive": False}, "method": "baseline"}
    assert deep_merge(base, {"fasa": None})["fasa"] is None
    assert base["fasa"]["scale"] == 5  # inputs untouched


def _write_variant(tmp_path: Path, tiny_spec_path: Path, old: str, new: str) -> Path:
    text = tiny_spec_path.read_text()
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "needle", "words"),
    [
        ("fasa: {adaptive: true}", "fasa: {adaptiv: true}", "adaptiv:", ["unknown key 'adaptiv'", "scale"]),
        ("paper: {AP: 20.8, APr: 8.0}", "paper: {AP: 20.8, APx: 8.0}", "APx", ["unknown metric 'APx'"]),
        ("  method: baseline", "  method: smoteish", "smoteish", ["unknown method 'smoteish'", "rfs"]),
        ("metrics: [AP, APr]", "metrics: [AP, APq]", "APq", ["unknown metric 'APq'"]),
        ("  lvis-r50: lvis_v1", "  lvis-r50: lvis_v2", "lvis_v2", ["unknown dataset 'lvis_v2'"]),
        ("    label: + FASA", "    label: + FASA\n    colour: red", "colour", ["unknown key 'colour'", "delta_to"]),
        ("    label: + FASA", "    label: + FASA\n    label: again", "label: again", ["duplicate key 'label'"]),
        ("fasa: {adaptive: true}", "fasa: {adaptive: true, beta: 2}", "beta: 2", ["<= 1.0"]),
        ("    label: + FASA", "    label: + FASA\n    delta_to: nowhere", "nowhere", ["delta_to 'nowhere'"]),
        ("  method: baseline", "  method: baseline\n  dataset: lvis_v1", "dataset: lvis_v1", ["cannot be set in base"]),
    ],
)
def test_spec_errors_name_the_file_and_line(tmp_path, tiny_spec_path, old, new, needle, words):
    path = _write_variant(tmp_path, tiny_spec_path, old, new)
    with pytest.raises(FasaError) as caught:
        load_spec(path)
    line = caught.value.line()
    assert f"{path}:{_line_of(path, needle)}:" in line
    for word in words:
        assert word in line
    assert "\n" not in line


def test_malformed_yaml_and_missing_dataset(tmp_path, tiny_spec_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("table: 1\nrows: [\n  {name: a\n")
    with pytest.raises(FasaError, match=r"broken.yaml:\d+: malformed YAML"):
        load_spec(broken)
    path = _write_variant(tmp_path, tiny_spec_path, "  lvis-r50: lvis_v1\n", "")
    with pytest.raises(FasaError, match="profile 'lvis-r50' has no dataset"):
        load_spec(path)


def test_unknown_spec_lists_the_available_ones():
    with pytest.raises(FasaError) as caught:
        load_spec("table99")
    assert "unknown spec 'table99'" in caught.value.problem
    assert "table1" in caught.value.fix and "table11" in caught.value.fix


def test_unknown_row_and_profile(tiny_spec):
    with pytest.raises(FasaError, match="use one of: base, fasa, static"):
        tiny_spec.resolve("nope")
    with pytest.raises(FasaError, match="does not run under profile 'lvis-r101'"):
        tiny_spec.resolve("base", "lvis-r101")
    with pytest.raises(FasaError, match="unknown profile"):
        tiny_spec.resolve("base", "gpu-huge")


def test_unbuilt_names_load_but_refuse_to_run(eql_unbuilt, monkeypatch):
    import dataclasses

    from fasa_cli import registry

    # Every profile and metric is built now: mark two as they were before (Tables 5 and 13).
    for table, name in ((registry.PROFILES, "lvis-r101"), (registry.METRICS, "AP_fixed")):
        monkeypatch.setitem(table, name, dataclasses.replace(table[name], built=False))
    spec = load_spec("table4")  # eql, crt, ... are known but not built
    assert spec.resolve("eql").method == "eql"
    with pytest.raises(NotBuiltError, match="method 'eql'.*row 'eql'"):
        spec.require_built([r.name for r in spec.rows], "cpu-compact")
    spec.require_built(["rfs", "rfs_fasa"], "cpu-compact")  # the built rows are fine
    with pytest.raises(NotBuiltError, match="profile 'lvis-r101'"):
        load_spec("table5_r101").require_built(["rfs"], "lvis-r101")
    with pytest.raises(NotBuiltError, match="metric 'AP_fixed'"):
        load_spec("table13_mask_r101").require_built(["rfs"], "lvis-r101")


def test_parse_seeds():
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    assert parse_seeds(None) is None
    for bad in ("0,x", "1,1", "-1"):
        with pytest.raises(FasaError):
            parse_seeds(bad)


@pytest.mark.parametrize("table, row, twin_table, twin_row", [
    ("table2", "baseline", "table1", "baseline"), ("table2", "fasa", "table1", "fa_fs"),
    ("table12", "rfs", "table1", "baseline"), ("table12", "rfs_fasa", "table1", "fa_fs"),
])
def test_rows_that_reuse_another_tables_runs_resolve_to_its_configs(table, row, twin_table, twin_row):
    # Reuse is by config hash: a spec edit that breaks a twin would silently train again.
    mine = load_spec(table).resolve(row, "cpu-compact")
    theirs = load_spec(twin_table).resolve(twin_row, "cpu-compact")
    assert mine.config_hash() == theirs.config_hash()


def test_table12_keeps_the_papers_rfs_on_lvis():
    assert {load_spec("table12").resolve(row, "lvis-r50").method for row in ("rfs", "rfs_fasa")} == {"rfs"}
