"""Bad dataset contents are caught before training (the cached pre-flight) and by
`fasa data check|stats|show`, each as one error line, never a traceback."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fasa_cli.data.embedded import default_root
from fasa_cli.data import check_dataset, embedded
from fasa_cli.data import preflight as preflight_mod
from fasa_cli.data.preflight import preflight_dataset
from fasa_cli.errors import FasaError

TRAIN, VAL = "annotations/lvis_v1_train.json", "annotations/lvis_v1_val.json"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FASA_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tiny_copy(tiny_data_dir, tmp_path):
    """A private copy of the generated tiny dataset, free to break."""
    root = tmp_path / default_root("tiny", 0).name
    shutil.copytree(default_root("tiny", 0), root)
    return root


def _edit(root: Path, ann: str, change) -> None:
    path = root / ann
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))  # json.dumps writes NaN as the bare literal, as a broken tool would


def _truncate(png: Path) -> None:
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])


# -- data check: the validation itself ------------------------------------------------------------


def test_check_reports_a_nan_box(lvis_doc, write_json):
    lvis_doc["annotations"][0]["bbox"] = [10.0, math.nan, 20.0, 20.0]
    problems = check_dataset(write_json(lvis_doc))
    assert len(problems) == 1 and "finite" in problems[0] and "annotation 1" in problems[0]


@pytest.mark.parametrize("field", ["area", "segmentation"])
def test_check_reports_nan_area_and_polygon(lvis_doc, write_json, field):
    ann = lvis_doc["annotations"][0]
    if field == "area":
        ann["area"] = math.nan
    else:
        ann["segmentation"] = [[10.0, 10.0, 30.0, math.inf, 30.0, 30.0]]
    problems = check_dataset(write_json(lvis_doc))
    assert len(problems) == 1 and "annotation 1" in problems[0]


@pytest.mark.parametrize("key", ["annotations", "images", "categories"])
def test_check_reports_empty_lists(lvis_doc, write_json, key):
    lvis_doc["annotations"] = [] if key != "categories" else lvis_doc["annotations"]
    lvis_doc[key] = []
    problems = check_dataset(write_json(lvis_doc))
    assert any(f"no {key}" in p for p in problems), problems


def _two_images(tmp_path):
    from PIL import Image

    (tmp_path / "train2017").mkdir()
    paths = [tmp_path / "train2017" / f"00000000000{i}.png" for i in (1, 2)]
    for path in paths:
        Image.effect_noise((64, 48), 40).convert("RGB").save(path)
    return paths


def test_check_decodes_every_image(lvis_doc, write_json, tmp_path):
    first, second = _two_images(tmp_path)
    assert check_dataset(write_json(lvis_doc), image_root=tmp_path) == []
    _truncate(second)
    problems = check_dataset(write_json(lvis_doc), image_root=tmp_path)
    assert len(problems) == 1 and "cannot be decoded" in problems[0] and second.name in problems[0]
    first.write_bytes(b"not an image at all")
    problems = check_dataset(write_json(lvis_doc), image_root=tmp_path)
    assert problems[0].startswith("2 image files that cannot be decoded")
    # Stat-only mode (the pre-flight of real LVIS) does not read them.
    assert check_dataset(write_json(lvis_doc), image_root=tmp_path, images="exists") == []


def test_cli_check_flags_a_truncated_png(tiny_copy, run_cli):
    png = next((tiny_copy / "train2017").glob("*.png"))
    _truncate(png)
    code, out, err = run_cli("data", "check", tiny_copy)
    assert code == 2 and "cannot be decoded" in out and png.name in out
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in out + err


def test_cli_check_flags_a_missing_val_json(tiny_copy, run_cli):
    (tiny_copy / VAL).unlink()
    code, out, err = run_cli("data", "check", tiny_copy)
    assert code == 2 and "lvis_v1_val.json: the val split is missing" in out
    assert "1 problem(s)" in err


def test_cli_check_flags_zero_annotations(tiny_copy, run_cli):
    _edit(tiny_copy, TRAIN, lambda d: d.update(annotations=[]))
    code, out, _ = run_cli("data", "check", tiny_copy / TRAIN)
    assert code == 2 and "no annotations" in out


# -- the pre-flight before each run ---------------------------------------------------------------


def test_preflight_passes_good_data(tiny_copy, cache_dir):
    preflight_dataset(tiny_copy, TRAIN, VAL, images="decode")
    assert (cache_dir / "preflight.json").is_file()


@pytest.mark.parametrize(
    ("ann", "breakage", "expected"),
    [
        (TRAIN, lambda d: d["annotations"][0].update(image_id=987654), "unknown images"),
        (TRAIN, lambda d: d["annotations"][0].update(category_id=987654), "unknown categories"),
        (TRAIN, lambda d: d["annotations"][0].update(bbox=[0, 0, 1e9, 1e9]), "outside their image"),
        (TRAIN, lambda d: d["annotations"][0].update(bbox=[-50, -50, 10, 10]), "outside their image"),
        (TRAIN, lambda d: d["annotations"][0].update(bbox=[5, 5, -3, 4]), "empty box"),
        (TRAIN, lambda d: d["annotations"][0].update(bbox=[5, 5, math.nan, 4]), "finite"),
        (TRAIN, lambda d: d.update(annotations=[]), "no annotations"),
        (VAL, lambda d: d.update(annotations=[]), "no annotations"),
        (VAL, lambda d: d.update(images=[], annotations=[]), "no images"),
    ],
)
def test_preflight_refuses_bad_annotations(tiny_copy, ann, breakage, expected):
    _edit(tiny_copy, ann, breakage)
    split = "train" if ann == TRAIN else "val"
    with pytest.raises(FasaError) as err:
        preflight_dataset(tiny_copy, TRAIN, VAL)
    assert f"the {split} split" in err.value.problem and expected in err.value.problem
    assert "fasa data check" in err.value.fix


def test_preflight_refuses_a_missing_val_json(tiny_copy):
    (tiny_copy / VAL).unlink()
    with pytest.raises(FasaError, match="val annotations .* do not exist"):
        preflight_dataset(tiny_copy, TRAIN, VAL)


def test_preflight_stats_images_and_decodes_only_when_asked(tiny_copy, monkeypatch, tmp_path):
    pngs = sorted((tiny_copy / "val2017").glob("*.png"))
    _truncate(pngs[0])
    preflight_dataset(tiny_copy, TRAIN, VAL, images="exists")  # real LVIS: existence only
    with pytest.raises(FasaError, match="cannot be decoded"):
        preflight_dataset(tiny_copy, TRAIN, VAL, images="decode")
    pngs[1].unlink()
    # The image check is part of the cached pass (real LVIS is not re-listed every run).
    preflight_dataset(tiny_copy, TRAIN, VAL, images="exists")
    monkeypatch.setenv("FASA_CACHE_DIR", str(tmp_path / "fresh-cache"))
    with pytest.raises(FasaError, match="image files missing"):
        preflight_dataset(tiny_copy, TRAIN, VAL, images="exists")


def test_preflight_is_cached_by_file_hash(tiny_copy, monkeypatch):
    preflight_dataset(tiny_copy, TRAIN, VAL)
    import fasa_cli.data.lvis_format as fmt

    def no_revalidation(*args, **kwargs):
        raise AssertionError("validated again although the files are unchanged")

    monkeypatch.setattr(fmt, "check_loaded", no_revalidation)
    preflight_dataset(tiny_copy, TRAIN, VAL)
    # Same content, new mtime: found by hash, still no re-validation.
    os.utime(tiny_copy / TRAIN, ns=(time.time_ns(), time.time_ns() + 10**9))
    preflight_dataset(tiny_copy, TRAIN, VAL)
    # Changed content: validated again (and the change is caught).
    monkeypatch.undo()
    monkeypatch.setenv("FASA_CACHE_DIR", str(tiny_copy.parent / "cache"))
    _edit(tiny_copy, TRAIN, lambda d: d["annotations"][0].update(category_id=987654))
    with pytest.raises(FasaError, match="unknown categories"):
        preflight_dataset(tiny_copy, TRAIN, VAL)


def test_preflight_survives_an_unwritable_cache(tiny_copy, monkeypatch, tmp_path):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("FASA_CACHE_DIR", str(tmp_path / "file" / "cache"))
    preflight_dataset(tiny_copy, TRAIN, VAL)  # nothing cached, but no error either


def test_dataset_root_runs_the_preflight_for_embedded_data(tiny_copy, monkeypatch):
    from fasa_cli.backend.datasets import dataset_root

    monkeypatch.setenv("FASA_DATA_DIR", str(tiny_copy.parent))
    assert dataset_root("embedded-tiny") == tiny_copy
    _edit(tiny_copy, TRAIN, lambda d: d["annotations"][0].update(image_id=987654))
    with pytest.raises(FasaError, match="train split .*unknown images"):
        dataset_root("embedded-tiny")


def test_dataset_root_runs_the_preflight_for_lvis(tiny_copy, monkeypatch):
    from fasa_cli.backend.datasets import dataset_root

    monkeypatch.setenv("FASA_LVIS_ROOT", str(tiny_copy))
    assert dataset_root("lvis_v1") == tiny_copy
    _edit(tiny_copy, VAL, lambda d: d.update(annotations=[]))
    with pytest.raises(FasaError, match="val split .*no annotations"):
        dataset_root("lvis_v1")


def test_preflight_hash_matches_sha256(tiny_copy):
    import hashlib

    path = tiny_copy / TRAIN
    assert preflight_mod.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# -- data stats / data show -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d["annotations"][0].update(category_id=4242), "unknown categories"),
        (lambda d: d.update(categories=[]), "no categories"),
    ],
)
def test_stats_refuses_bad_categories_in_one_line(lvis_doc, write_json, run_cli, breakage, expected):
    breakage(lvis_doc)
    code, out, err = run_cli("data", "stats", write_json(lvis_doc))
    assert code == 2 and expected in err and err.count("\n") == 1 and "Traceback" not in out + err


def test_stats_out_naming_a_file_is_one_line(tiny_copy, tmp_path, run_cli):
    target = tmp_path / "a_file"
    target.write_text("x")
    code, _, err = run_cli("data", "stats", tiny_copy, "--out", target)
    assert code == 2 and "is a file" in err and err.count("\n") == 1
    code, _, err = run_cli("data", "stats", tiny_copy, "--out", target / "sub")
    assert code == 2 and "not a folder" in err and err.count("\n") == 1


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_show_with_a_bad_image_is_one_line(tiny_copy, run_cli, damage, tmp_path):
    data = json.loads((tiny_copy / TRAIN).read_text())
    png = tiny_copy / data["images"][0]["file_name"]
    if damage == "missing":
        png.unlink()
    elif damage == "truncated":
        _truncate(png)
    else:
        png.write_bytes(os.urandom(300))
    code, out, err = run_cli("data", "show", tiny_copy, "--n", "2", "--out", tmp_path / "x.png")
    assert code == 2 and png.name in err and err.count("\n") == 1 and "Traceback" not in out + err
    assert "fasa data check" in err


def test_show_refuses_n_zero(tiny_copy, run_cli, tmp_path):
    code, _, err = run_cli("data", "show", tiny_copy, "--n", "0", "--out", tmp_path / "x.png")
    assert code == 2 and "Traceback" not in err and not (tmp_path / "x.png").exists()


def test_show_out_folder_writes_inside_and_says_so(tiny_copy, run_cli, tmp_path):
    folder = tmp_path / "pictures"
    code, out, err = run_cli("data", "show", tiny_copy, "--n", "1", "--out", folder)
    assert code == 0, err
    written = folder / "examples_train.png"
    assert written.is_file() and f"wrote {written}" in out.replace("\n", "")
    assert not folder.with_suffix(".png").exists()


def test_show_out_naming_a_non_png_file_is_one_line(tiny_copy, run_cli, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run_cli("data", "show", tiny_copy, "--n", "1", "--out", target)
    assert code == 2 and "not a .png file" in err and target.read_text() == "mine"


# -- data make: partial folders, permissions, full disk ----------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_partial_folders_are_removed_live_ones_kept(tmp_path):
    import socket

    dead = tmp_path / ".small-seed0.partial-dead"
    live = tmp_path / ".small-seed0.partial-live"
    legacy = tmp_path / ".small-seed0.partial-old"
    fresh = tmp_path / ".small-seed0.partial-new"
    for folder in (dead, live, legacy, fresh):
        (folder / "annotations").mkdir(parents=True)
    host = socket.gethostname()
    (dead / embedded.OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": host, "start": None}))
    (live / embedded.OWNER_FILE).write_text(json.dumps(embedded._owner()))
    old = time.time() - 2 * embedded._ORPHAN_AGE_S
    os.utime(legacy, (old, old))  # made by older code (no owner file), long ago
    removed = embedded.remove_stale_partials(tmp_path)
    assert sorted(removed) == sorted([dead, legacy])
    assert live.is_dir() and fresh.is_dir()


def test_make_cleans_stale_partials_and_makes_a_0755_folder(tmp_path):
    stale = tmp_path / ".ds.partial-killed"
    stale.mkdir()
    (stale / embedded.OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": __import__("socket").gethostname()}))
    previous = os.umask(0o022)
    try:
        paths = embedded.ensure_embedded("tiny", 0, root=tmp_path / "ds", progress=False)
    finally:
        os.umask(previous)
    assert not stale.exists()
    assert (paths.root.stat().st_mode & 0o777) == 0o755
    assert not (paths.root / embedded.OWNER_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_make_on_a_full_disk_is_one_line(tmp_path, run_cli, monkeypatch):
    import errno

    def full(path, pixels):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(embedded, "_write_png", full)
    code, out, err = run_cli("data", "make", "--preset", "tiny", "--seed", "4", "--root", tmp_path / "ds")
    assert code == 2 and "ENOSPC" in err and str(tmp_path) in err and err.count("\n") == 1
    assert "Traceback" not in out + err and list(tmp_path.iterdir()) == []
