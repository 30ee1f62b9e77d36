"""`fasa data make|check|stats|show` through the real entry point, good and bad input."""

from __future__ import annotations

import json

import pytest

from fasa_cli.data.embedded import default_root


def test_make_finds_existing_data_and_reports_groups(tiny_data_dir, run_cli):
    code, out, err = run_cli("data", "make", "--preset", "tiny", "--seed", "0")
    assert code == 0, err
    assert str(default_root("tiny", 0)) in out and "rare" in out and "frequent" in out


def test_make_into_root_with_examples(tmp_path, run_cli):
    root = tmp_path / "ds"
    code, out, err = run_cli("data", "make", "--preset", "tiny", "--seed", "2", "--root", root, "--examples")
    assert code == 0, err
    assert (root / "annotations" / "lvis_v1_train.json").is_file()
    assert (root / "examples.png").stat().st_size > 10_000


def test_check_good_folder_and_json(tiny_data_dir, run_cli):
    folder = default_root("tiny", 0)
    code, out, _ = run_cli("data", "check", folder)
    assert code == 0 and out.count("ok ") == 2
    code, out, _ = run_cli("data", "check", folder / "annotations" / "lvis_v1_val.json")
    assert code == 0 and "ok " in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"images": [', "is not valid JSON"),
        (None, "does not exist"),
    ],
)
def test_check_unreadable_input_is_one_error_line(tmp_path, run_cli, content, expected):
    path = tmp_path / "lvis_v1_train.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run_cli("data", "check", path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err and "Fix:" in err
    assert str(path) in err and "Traceback" not in err + out


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d["annotations"][0].update(image_id=424242), "unknown images"),
        (lambda d: d["annotations"][0].update(category_id=999), "unknown categories"),
        (lambda d: d["categories"][0].pop("frequency"), "without a frequency"),
    ],
)
def test_check_lists_problems_and_exits_2(lvis_doc, write_json, run_cli, breakage, expected):
    breakage(lvis_doc)
    path = write_json(lvis_doc)
    code, out, err = run_cli("data", "check", path)
    assert code == 2
    assert expected in out and "1 problem" in out
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_check_missing_images_in_folder(tiny_data_dir, tmp_path, run_cli):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(default_root("tiny", 0) / "annotations", folder / "annotations")
    code, out, _ = run_cli("data", "check", folder)
    assert code == 2 and "image files missing" in out


def test_stats_writes_histogram_and_counts(tiny_data_dir, tmp_path, run_cli):
    import pandas as pd

    code, out, err = run_cli("data", "stats", default_root("tiny", 0), "--out", tmp_path)
    assert code == 0, err
    assert "rare" in out and "common" in out and "frequent" in out
    assert (tmp_path / "long_tail.png").stat().st_size > 5_000
    table = pd.read_csv(tmp_path / "class_counts.csv")
    train = json.loads((default_root("tiny", 0) / "annotations" / "lvis_v1_train.json").read_text())
    assert len(table) == len(train["categories"])
    assert table["train_instance_count"].sum() == len(train["annotations"])
    assert "val_image_count" in table


def test_stats_of_a_json_writes_next_to_it(lvis_doc, write_json, run_cli):
    path = write_json(lvis_doc)
    code, _, err = run_cli("data", "stats", path)
    assert code == 0, err
    assert path.with_name("lvis_v1_train_long_tail.png").is_file()


def test_show_draws_examples(tiny_data_dir, tmp_path, run_cli):
    out_png = tmp_path / "ex.png"
    code, _, err = run_cli("data", "show", default_root("tiny", 0), "--n", "4", "--split", "val", "--out", out_png)
    assert code == 0, err
    assert out_png.stat().st_size > 10_000


def test_unknown_preset_is_a_clear_error(run_cli, tmp_path):
    code, _, err = run_cli("data", "make", "--preset", "huge", "--root", tmp_path / "x")
    assert code == 2 and "unknown embedded preset 'huge'" in err and "tiny, small, medium" in err
