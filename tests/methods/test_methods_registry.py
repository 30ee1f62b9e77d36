"""The method plug-ins as a whole: built is derived from registrations, every built method x
profile builds its mmdet config, method_args are validated where they are written, and configs
without method arguments keep their identity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fasa_cli import registry
from fasa_cli.backend.config import build_config
from fasa_cli.backend.datasets import DatasetInfo
from fasa_cli.errors import FasaError, NotBuiltError
from fasa_cli.experiments.compare import build_compare_spec
from fasa_cli.experiments.spec import load_spec
from fasa_cli.methods import api, registered_methods
from fasa_cli.methods.api import HOST_HEADS, register_method
from fasa_cli.runconfig import FASASettings, RunConfig

DATA = DatasetInfo("embedded-tiny", Path("/tmp/nowhere"), "annotations/lvis_v1_train.json",
                   "annotations/lvis_v1_val.json", ["a", "b", "c"], ["r", "c", "f"], [2, 30, 400],
                   image_counts=[2, 20, 150], train_images=300)
PACKAGE = Path(__file__).resolve().parents[2] / "fasa_cli"
TABLE2 = ("smote", "moex", "instaboost", "yin", "liu", "chu")
BUILT_PROFILES = [name for name, entry in registry.PROFILES.items() if entry.built and entry.task == "detection"]


def test_built_is_derived_from_the_registrations():
    methods = registered_methods()
    assert {"baseline", "rfs", *TABLE2} <= set(methods)
    for name, entry in registry.METHODS.planned().items():
        assert registry.METHODS[name].built == (name in methods), name
        if name in methods:
            assert methods[name].table == entry.paper_table, name
    unbuilt = next((n for n in registry.METHODS.planned() if n not in methods), None)
    if unbuilt is not None:  # once every paper method is built there is none left to refuse
        with pytest.raises(NotBuiltError, match=f"method '{unbuilt}'"):
            registry.lookup("method", unbuilt)


def test_a_new_module_is_all_a_method_needs():
    # What a new module in fasa_cli/methods/ does at import: register itself.
    register_method("probe_method", table="99", summary="a probe (test only)")(lambda edit, args: None)
    try:
        assert registry.METHODS["probe_method"].built and "probe_method" in registry.METHODS
        run = RunConfig(dataset="embedded-tiny", profile="cpu-compact", method="probe_method")
        cfg = build_config(run, DATA, Path("/tmp/run"), seed=0)
        assert cfg["model"]["roi_head"]["bbox_head"]["type"] == "Shared2FCBBoxHead"
    finally:
        api._REGISTERED.pop("probe_method")


@pytest.mark.parametrize("profile", BUILT_PROFILES)
@pytest.mark.parametrize("method", sorted(n for n, m in registered_methods().items() if "detection" in m.tasks))
@pytest.mark.parametrize("with_fasa", [False, True])
def test_every_built_method_and_profile_builds_its_config(method, profile, with_fasa):
    run = RunConfig(dataset="embedded-tiny", profile=profile, method=method, fasa={} if with_fasa else None)
    if method == "simcal" and (with_fasa or "cascade" in profile):  # Table 6's alternative to FASA, Mask R-CNN only
        with pytest.raises(FasaError, match="simcal"):
            build_config(run, DATA, Path("/tmp/run"), seed=0)
        return
    cfg = build_config(run, DATA, Path("/tmp/run"), seed=0)
    json.dumps(cfg)  # plain data only: it travels to the child process as a config file
    head = cfg["model"]["roi_head"]["bbox_head"]
    spec = registered_methods()[method]
    hooks = [h["type"] for h in cfg["custom_hooks"]]
    assert hooks[-1] == ("FASAHook" if with_fasa else "ClassifierNormsHook")
    if spec.feature is not None:
        assert head["type"] == HOST_HEADS["FASAShared2FCBBoxHead" if with_fasa else "Shared2FCBBoxHead"]
        assert [p["name"] for p in head["plugins"]] == [method]
        assert head["class_frequency"] == DATA.frequency and "MethodEpochHook" in hooks
    elif method == "simcal":  # replaces the box head: a calibration branch and dual-head inference
        assert head["type"] == "SimCalBBoxHead" and head["loss_cls"]["type"] == "SimCalDualLoss"
    else:
        assert head["type"] == ("FASAShared2FCBBoxHead" if with_fasa else "Shared2FCBBoxHead")
    train = cfg["train_dataloader"]["dataset"]
    inner = train.get("dataset", train)
    steps = [t["type"] for t in inner["pipeline"]]
    assert ("GuardedInstaBoost" in steps) == (method == "instaboost")
    if method == "instaboost":
        assert steps.index("GuardedInstaBoost") == steps.index("LoadAnnotations") - 1
        val_steps = [t["type"] for t in cfg["test_dataloader"]["dataset"]["pipeline"]]
        assert "GuardedInstaBoost" not in val_steps
        if with_fasa:
            assert "GuardedInstaBoost" not in [t["type"] for t in cfg["custom_hooks"][-1]["val_dataset"]["pipeline"]]
    assert (train["type"] == "ClassBalancedDataset") == (method in ("rfs", "seesaw", "crt", "bags"))


def test_liu_uses_a_cosine_classifier_and_chu_can_freeze_its_second_stage():
    cfg = build_config(RunConfig(dataset="embedded-tiny", profile="cpu-compact", method="liu",
                                 method_args={"s": 16}), DATA, Path("/tmp/run"), 0)
    head = cfg["model"]["roi_head"]["bbox_head"]
    assert head["cls_predictor_cfg"] == dict(type="NormedLinear", tempearture=16.0, bias=False)
    assert head["plugins"][0]["args"]["s"] == 16.0 and head["plugins"][0]["args"]["m_a"] == 0.1
    cfg = build_config(RunConfig(dataset="embedded-tiny", profile="cpu-compact", method="chu",
                                 method_args={"freeze_in_phase_two": True}), DATA, Path("/tmp/run"), 0)
    hook = next(h for h in cfg["custom_hooks"] if h["type"] == "MethodEpochHook")
    assert hook == dict(type="MethodEpochHook", freeze_from=1, trainable=["roi_head.bbox_head.fc_cls"])


def test_configs_without_method_args_hash_as_before():
    assert RunConfig(dataset="embedded-small", profile="cpu-compact").config_hash() == "7018e0d9a62b"
    assert RunConfig(dataset="embedded-small", profile="cpu-compact", fasa=FASASettings()).config_hash() == "0bdb02544b34"
    rfs = RunConfig(dataset="embedded-small", profile="cpu-compact", method="rfs", fasa={"scale": 5, "adaptive": False})
    assert rfs.config_hash() == "daed5c4fcc20"
    moex = RunConfig(dataset="embedded-small", profile="cpu-compact", method="moex")
    assert moex.config_hash() != moex.model_copy(update={"method_args": {"p": 0.5}}).config_hash()


def test_fasa_settings_are_the_core_config_fields():
    import dataclasses

    from fasa_cli.core.config import FASAConfig

    core = {f.name: f.default for f in dataclasses.fields(FASAConfig)
            if f.name not in ("num_classes", "feat_dim", "seed")}
    ours = FASASettings().core_settings()
    assert ours == core
    with pytest.raises(ValueError, match="momentum"):
        FASASettings(momentum=0.0)  # the core's own bound


def _spec_file(tmp_path: Path, row_set: str) -> Path:
    text = (Path(__file__).resolve().parents[2] / "experiments" / "table2.yaml").read_text()
    old = "    set: {method: smote}"
    assert old in text
    path = tmp_path / "t2.yaml"
    path.write_text(text.replace(old, row_set))
    return path


@pytest.mark.parametrize(("row_set", "words"), [
    ("    set:\n      method: smote\n      method_args:\n        kk: 3", ["unknown argument 'kk'", "use one of: k, bank_size"]),
    ("    set:\n      method: smote\n      method_args:\n        k: 0", ["argument 'k'", "greater than or equal to 1"]),
])
def test_a_bad_method_argument_is_a_file_line_error(tmp_path, row_set, words):
    path = _spec_file(tmp_path, row_set)
    with pytest.raises(FasaError) as caught:
        load_spec(path)
    line = caught.value.line()
    key = row_set.rsplit("\n", 1)[-1].strip().split(":")[0]
    number = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(f"{key}:"))
    assert f"{path}:{number}:" in line and "\n" not in line
    for word in words:
        assert word in line


def test_bad_method_args_and_unknown_methods_exit_2_in_one_line(tmp_path, capsys):
    from fasa_cli.cli import main

    path = _spec_file(tmp_path, "    set: {method: moex, method_args: {p: 2}}")
    for argv in (["ablate", str(path)], ["compare", "--baselines", "smote,nosuch"]):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--results-dir", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


def test_table2_runs_all_its_rows_and_compare_carries_the_papers_numbers():
    spec = load_spec("table2")
    spec.require_built([r.name for r in spec.runnable_rows()], "cpu-compact")
    assert len(spec.runnable_rows()) == 8 and spec.seeds == [0, 1, 2]
    assert spec.resolve("moex").method_args == {}  # Table 14's values are MoEx's defaults
    cmp = build_compare_spec(["smote", "moex"], with_fasa=True, seeds=[0])
    for row in ("baseline", "smote", "moex"):  # so compare reuses Table 2's runs
        assert cmp.resolve(row, "cpu-compact").config_hash() == spec.resolve(row, "cpu-compact").config_hash()
    paper = {r.name: r.paper.get("AP") for r in cmp.rows}
    assert paper == {"baseline": 20.8, "baseline_fasa": 23.7, "smote": 21.5, "smote_fasa": None,
                     "moex": 21.2, "moex_fasa": None}
    assert "Table 2" in cmp.notes


def test_methods_import_no_mmdet_and_nothing_imports_the_old_config_module():
    for path in (PACKAGE / "methods").glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+mm(det|cv|engine)", path.read_text(), re.M), path
    for path in PACKAGE.rglob("*.py"):
        if path.name != "config.py" or path.parent.name != "experiments":
            assert "experiments.config" not in path.read_text(), path
