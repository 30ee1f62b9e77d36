"""The result store: the one place every command reads and writes results through.

Layout under the results root (default <repo>/results, or $FASA_RESULTS_DIR):
  records/<spec>/spec.json                                          the spec as last run
  records/<spec>/<profile>--<dataset>/<row>/seed<k>.json            a finished run's record
  records/<spec>/<profile>--<dataset>/<row>/seed<k>.matches.npz     its per-detection matches
  runs/<spec>/<profile>--<dataset>/<row>/seed<k>/                   checkpoints, logs, detections
  tables/<spec>--<profile>--<dataset>.md, figures/*.png, REPORT.md, benchmarks/*.json
`records/` is committed: a record is compact (config, metrics, per-class AP, timing, memory,
FASA state, classifier norms, provenance) and its matches are what a paired bootstrap
interval needs, so a fresh clone rebuilds every table, figure and the report from it.
`runs/` is local (git-ignored) and only needed to resume, re-evaluate or inspect a run.
One file per run and no shared index, so concurrent writers of different runs never
collide. A finished record is never overwritten: it is created with a hard link, which
fails if the name exists, so even two writers of the same run cannot both win.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from fasa_cli.errors import FasaError
from fasa_cli.jsonio import dumps_json
from fasa_cli.rundir import read_jsonl, run_lock

SPEC_SNAPSHOT = "spec.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_SHARED_MODE = 0o666 & ~_UMASK
MATCHES_SUFFIX = ".matches.npz"
_RECORD_FILE = re.compile(r"^seed(\d+)\.json$")
RECORD_COLUMNS = ["spec", "table", "row", "seed", "profile", "dataset", "config_hash", "wall_s", "peak_mem_mb", "finished"]


@dataclass(frozen=True)
class RunKey:
    spec: str
    profile: str
    dataset: str
    row: str
    seed: int

    def relative_dir(self) -> Path:
        return Path(self.spec) / f"{self.profile}--{self.dataset}" / self.row / f"seed{self.seed}"


def default_results_dir() -> Path:
    env = os.environ.get("FASA_RESULTS_DIR")
    if env:
        return Path(env)
    from fasa_cli.paths import repo_root

    root = repo_root()
    return (root if root is not None else Path.cwd()) / "results"


class ResultStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_results_dir()
        self.records_root = self.root / "records"
        self.runs_root = self.root / "runs"
        self.tables_dir = self.root / "tables"
        self.figures_dir = self.root / "figures"
        self.benchmarks_dir = self.root / "benchmarks"
        self.report_path = self.root / "REPORT.md"
        # Derived, local and git-ignored: a run's AP on a set of image resamples, keyed by
        # the content of its outcomes file and the resamples (fasa_cli.experiments.tables).
        self.cache_dir = self.root / ".cache"

    # -- runs ------------------------------------------------------------------------------
    def run_dir(self, key: RunKey) -> Path:
        """The run's working folder (checkpoints, logs, detections); local, not committed."""
        return self.runs_root / key.relative_dir()

    def record_path(self, key: RunKey) -> Path:
        return self.records_root / key.relative_dir().with_suffix(".json")

    def is_finished(self, key: RunKey) -> bool:
        return self.record_path(key).is_file()

    def read_record(self, key: RunKey) -> dict[str, Any] | None:
        path = self.record_path(key)
        return self._load_record(path) if path.is_file() else None

    def record_by_id(self, record_id: str) -> dict[str, Any] | None:
        """A record named by its id (e.g. a `reused_from`), or None."""
        path = self.records_root / f"{record_id}.json"
        return self._load_record(path) if path.is_file() else None

    def _load_record(self, path: Path) -> dict[str, Any]:
        record = _read_json(path)
        rel = path.relative_to(self.records_root).with_suffix("")
        # Derived from where the record lies, so a moved store stays consistent.
        record["record_id"] = rel.as_posix()
        record["run_dir"] = str(self.runs_root / rel)
        return record

    def write_record(self, key: RunKey, record: dict[str, Any], matches: Path | None = None) -> Path:
        """Atomically create the run's record (and copy its match table beside it); refuse
        if one exists (see `move_aside`)."""
        target = self.record_path(key)
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise _finished_error(key)
        if matches is not None and matches.is_file():
            tmp = _temp_path(folder, MATCHES_SUFFIX)
            shutil.copyfile(matches, tmp)
            os.replace(tmp, folder / f"seed{key.seed}{MATCHES_SUFFIX}")
        record = {k: v for k, v in record.items() if k not in ("run_dir", "record_id")}
        tmp = _write_temp(folder, dumps_json(record, indent=1))
        try:
            try:
                os.link(tmp, target)  # atomic create-if-absent: a finished record is never replaced
            except FileExistsError:
                raise
            except OSError:
                # Filesystems without hard links: check, then rename (a tiny race, same result).
                if target.exists():
                    raise FileExistsError(target) from None
                os.replace(tmp, target)
        except FileExistsError:
            raise _finished_error(key) from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(folder)
        return target

    def move_aside(self, key: RunKey) -> Path | None:
        """Rename a run's record (and matches, and run folder) to *.replaced-<time> so it can
        be redone; nothing finished is deleted. Returns the record's new path."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.run_dir(key)
        # Held throughout: fail before anything moves if another command uses the run.
        with run_lock(folder) if folder.exists() else contextlib.nullcontext():
            record = self.record_path(key)
            aside = None
            if record.exists():
                aside = record.with_name(f"seed{key.seed}.replaced-{stamp}.json")
                os.replace(record, aside)
            matches = record.with_name(f"seed{key.seed}{MATCHES_SUFFIX}")
            if matches.exists():
                os.replace(matches, record.with_name(f"seed{key.seed}.replaced-{stamp}{MATCHES_SUFFIX}"))
            if folder.exists():
                os.replace(folder, folder.with_name(f"{folder.name}.replaced-{stamp}"))
        return aside

    def records(self) -> Iterator[dict[str, Any]]:
        """Every finished record (records moved aside are not records)."""
        if not self.records_root.is_dir():
            return
        for path in sorted(self.records_root.glob("*/*--*/*/seed*.json")):
            if _RECORD_FILE.match(path.name):
                yield self._load_record(path)

    def find(self, **match: Any) -> list[dict[str, Any]]:
        """Records whose fields equal every given value, e.g. find(spec="table1", row="fa")."""
        return [r for r in self.records() if all(r.get(k) == v for k, v in match.items())]

    def frame(self, **match: Any) -> pd.DataFrame:
        """One row per finished run: identity columns, then one column per metric."""
        rows = []
        for record in self.find(**match):
            flat = {col: record.get(col) for col in RECORD_COLUMNS}
            flat["record_id"] = record["record_id"]
            flat.update({k: (float("nan") if v is None else v) for k, v in record.get("metrics", {}).items()})
            rows.append(flat)
        return pd.DataFrame(rows, columns=None if rows else [*RECORD_COLUMNS, "record_id"])

    def source_id(self, record: dict[str, Any]) -> str:
        """The record that holds the run's own results (itself, or the run it reused)."""
        return record.get("reused_from") or record["record_id"]

    def artefacts_dir(self, record: dict[str, Any]) -> Path:
        """Where a run's local artefacts are: its own folder, or the folder of the run it reused."""
        return self.runs_root / self.source_id(record)

    def matches_path(self, record: dict[str, Any]) -> Path:
        return self.records_root / f"{self.source_id(record)}{MATCHES_SUFFIX}"

    def matches(self, record: dict[str, Any]):
        """The run's per-image outcomes (fasa_cli.evaluation.bootstrap: a MatchTable for a
        detector, a PredictionTable for a classifier), or None."""
        path = self.matches_path(record)
        if not path.is_file():
            return None
        from fasa_cli.evaluation.bootstrap import load_outcomes

        return load_outcomes(path)

    # -- artefacts the backend writes into a run folder --------------------------------------
    @staticmethod
    def read_artefact_json(run_dir: str | Path, name: str) -> Any | None:
        path = Path(run_dir) / name
        return _read_json(path) if path.is_file() else None

    @staticmethod
    def read_artefact_jsonl(run_dir: str | Path, name: str) -> list[Any] | None:
        path = Path(run_dir) / name
        return read_jsonl(path) if path.is_file() else None

    # -- spec snapshots (so reports need only the store) ------------------------------------
    def save_spec(self, spec_dump: dict[str, Any]) -> Path:
        folder = self.records_root / spec_dump["name"]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / SPEC_SNAPSHOT
        if spec_dump.get("source"):
            spec_dump = {**spec_dump, "source": _portable_path(spec_dump["source"])}
        text = json.dumps(spec_dump, indent=1, sort_keys=True)
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            return target  # unchanged: leave the committed file alone
        tmp = _write_temp(folder, text)
        os.replace(tmp, target)  # the latest spec wins; runs keep their own resolved config
        return target

    def spec_snapshots(self) -> dict[str, dict[str, Any]]:
        if not self.records_root.is_dir():
            return {}
        return {p.parent.name: _read_json(p) for p in sorted(self.records_root.glob(f"*/{SPEC_SNAPSHOT}"))}


def _portable_path(path: str) -> str:
    # A committed snapshot names its spec relative to the checkout that holds it (any
    # checkout, a worktree included), not by this machine's folders.
    for folder in Path(path).parents:
        if (folder / "pyproject.toml").is_file():
            return Path(path).relative_to(folder).as_posix()
    return path


def _finished_error(key: RunKey) -> FasaError:
    return FasaError(f"run {key.relative_dir()} already has a finished record",
                     "pass --force to redo it (the old record and folder are kept aside)")


def _temp_path(folder: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.fchmod(fd, _SHARED_MODE)
    os.close(fd)
    return Path(name)


def _write_temp(folder: Path, text: str) -> Path:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    os.fchmod(fd, _SHARED_MODE)  # mkstemp makes 0600; a record is read by whoever reads the results
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(name)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise FasaError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})", "restore or delete the file") from None
