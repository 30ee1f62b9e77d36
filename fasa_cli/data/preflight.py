"""Pre-flight check of a dataset before a run: the `fasa data check` validation, cached.

Training on unknown image/category ids, NaN or out-of-image boxes, an empty train or val
split trains silently or fails late (after training, in evaluation). So each run first
validates both annotation files. A pass is remembered in a small JSON cache keyed by the
files' sha256 (plus the image check and image root), so real LVIS (a 1 GB train JSON) is
parsed once, not before every run. Hashing is skipped while a file's size and mtime are
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fasa_cli.errors import FasaError

PREFLIGHT_VERSION = 1  # bump when the validation changes, so old passes are re-checked
CACHE_NAME = "preflight.json"
_MAX_ENTRIES = 256


def cache_dir() -> Path:
    """$FASA_CACHE_DIR, else $XDG_CACHE_HOME/fasa, else ~/.cache/fasa."""
    if os.environ.get("FASA_CACHE_DIR"):
        return Path(os.environ["FASA_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fasa"


def _load_cache() -> dict:
    try:
        cache = json.loads((cache_dir() / CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": {}, "passed": []}
    if not isinstance(cache, dict) or not isinstance(cache.get("files"), dict) or not isinstance(cache.get("passed"), list):
        return {"files": {}, "passed": []}
    return cache


def _save_cache(cache: dict) -> None:
    from fasa_cli.jsonio import write_json

    cache["files"] = dict(list(cache["files"].items())[-_MAX_ENTRIES:])
    cache["passed"] = cache["passed"][-_MAX_ENTRIES:]
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json(cache_dir() / CACHE_NAME, cache, indent=None)
    except OSError:
        pass  # a read-only home only costs a re-check next time


def file_sha256(path: Path, cache: dict | None = None) -> str:
    """sha256 of a file; with `cache`, reused while the file's size and mtime are unchanged."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    key = str(path.resolve())
    known = (cache or {}).get("files", {}).get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    if cache is not None:
        cache["files"].pop(key, None)
        cache["files"][key] = {"stamp": stamp, "sha256": sha}
    return sha


def preflight_dataset(root: str | Path, train_ann: str | Path, val_ann: str | Path, *,
                      data_prefix: str | Path | None = None, images: str = "exists", fmt: str = "lvis") -> None:
    """Raise FasaError naming the first problem unless both splits pass `fasa data check`.

    `train_ann`/`val_ann` are relative to `root`; image paths to `data_prefix` (default:
    root). `images`: "exists" stats every image file (real LVIS is not read each run),
    "decode" decodes every one (the small embedded data).
    """
    from fasa_cli.data.lvis_format import check_loaded, read_json

    root = Path(root)
    prefix = Path(data_prefix) if data_prefix is not None else root
    splits = {"train": root / train_ann, "val": root / val_ann}
    for split, path in splits.items():
        if not path.is_file():
            raise FasaError(f"the {split} annotations {path} do not exist",
                            f"put the {split} JSON there (or regenerate the dataset); `fasa data check {root}` checks it")
    cache = _load_cache()
    known = dict(cache["files"])
    digests = {split: file_sha256(path, cache) for split, path in splits.items()}
    key = hashlib.sha256(json.dumps(
        [PREFLIGHT_VERSION, digests["train"], digests["val"], images, fmt, str(prefix.resolve())]).encode()).hexdigest()
    if key in cache["passed"]:
        if cache["files"] != known:  # touched but identical files: remember the new stamps
            _save_cache(cache)
        return
    for split, path in splits.items():
        problems = check_loaded(read_json(path), path, prefix, fmt, images=images)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise FasaError(f"the {split} split {path} is not usable: {problems[0]}{more}",
                            f"repair or regenerate it; `fasa data check {root}` lists every problem")
    cache["passed"].append(key)
    _save_cache(cache)
