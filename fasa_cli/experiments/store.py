"""The result store: the one place every command reads and writes results through.

Layout under the results root (default <repo>/results, or $FASA_RESULTS_DIR):
  runs/<spec>/spec.json                                   the spec as last run (for reports)
  runs/<spec>/<profile>--<dataset>/<row>/seed<k>/record.json   a finished run
  runs/.../seed<k>/<artefacts>                            written by the backend
  tables/<spec>.md, figures/*.png, REPORT.md, benchmarks/*.json
One file per run and no shared index, so concurrent writers of different runs never
collide. A finished record is never overwritten: it is created with a hard link, which
fails if the name exists, so even two writers of the same run cannot both win.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from fasa_cli.errors import FasaError

RECORD = "record.json"
SPEC_SNAPSHOT = "spec.json"
_SEED_DIR = re.compile(r"^seed(\d+)$")
RECORD_COLUMNS = ["spec", "table", "row", "seed", "profile", "dataset", "config_hash", "wall_s", "peak_mem_mb"]


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
    from fasa_cli.experiments.spec import repo_root

    root = repo_root()
    return (root if root is not None else Path.cwd()) / "results"


class ResultStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_results_dir()
        self.runs_root = self.root / "runs"
        self.tables_dir = self.root / "tables"
        self.figures_dir = self.root / "figures"
        self.benchmarks_dir = self.root / "benchmarks"
        self.report_path = self.root / "REPORT.md"

    # -- runs ------------------------------------------------------------------------------
    def run_dir(self, key: RunKey) -> Path:
        return self.runs_root / key.relative_dir()

    def record_path(self, key: RunKey) -> Path:
        return self.run_dir(key) / RECORD

    def is_finished(self, key: RunKey) -> bool:
        return self.record_path(key).is_file()

    def read_record(self, key: RunKey) -> dict[str, Any] | None:
        path = self.record_path(key)
        if not path.is_file():
            return None
        record = _read_json(path)
        record["run_dir"] = str(path.parent)
        return record

    def write_record(self, key: RunKey, record: dict[str, Any]) -> Path:
        """Atomically create the run's record; refuse if one exists (see `move_aside`)."""
        folder = self.run_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / RECORD
        record = {k: v for k, v in record.items() if k != "run_dir"}  # derived from the path on read
        tmp = _write_temp(folder, json.dumps(record, indent=2, sort_keys=True, allow_nan=True))
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
            raise FasaError(
                f"run {key.relative_dir()} already has a finished record", "pass --force to redo it (the old run is kept aside)"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(folder)
        return target

    def move_aside(self, key: RunKey) -> Path | None:
        """Rename a run folder to seed<k>.replaced-<time> so it can be redone; returns the new path."""
        folder = self.run_dir(key)
        if not folder.exists():
            return None
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = folder.with_name(f"{folder.name}.replaced-{stamp}")
        os.replace(folder, aside)
        return aside

    def records(self) -> Iterator[dict[str, Any]]:
        """Every finished record (runs moved aside are not records)."""
        if not self.runs_root.is_dir():
            return
        for path in sorted(self.runs_root.glob(f"*/*--*/*/seed*/{RECORD}")):
            if _SEED_DIR.match(path.parent.name):
                record = _read_json(path)
                record["run_dir"] = str(path.parent)
                yield record

    def find(self, **match: Any) -> list[dict[str, Any]]:
        """Records whose fields equal every given value, e.g. find(spec="table1", row="fa")."""
        return [r for r in self.records() if all(r.get(k) == v for k, v in match.items())]

    def frame(self, **match: Any) -> pd.DataFrame:
        """One row per finished run: identity columns, then one column per metric."""
        rows = []
        for record in self.find(**match):
            flat = {col: record.get(col) for col in RECORD_COLUMNS}
            flat["run_dir"] = record["run_dir"]
            flat.update(record.get("metrics", {}))
            rows.append(flat)
        return pd.DataFrame(rows, columns=None if rows else [*RECORD_COLUMNS, "run_dir"])

    def relative_dir(self, record: dict[str, Any]) -> str:
        return Path(record["run_dir"]).relative_to(self.runs_root).as_posix()

    def artefacts_dir(self, record: dict[str, Any]) -> Path:
        """Where a run's artefacts are: its own folder, or the folder of the run it reused."""
        reused = record.get("reused_from")
        return self.runs_root / reused if reused else Path(record["run_dir"])

    # -- artefacts the backend writes into a run folder --------------------------------------
    @staticmethod
    def read_artefact_json(run_dir: str | Path, name: str) -> Any | None:
        path = Path(run_dir) / name
        return _read_json(path) if path.is_file() else None

    @staticmethod
    def read_artefact_jsonl(run_dir: str | Path, name: str) -> list[Any] | None:
        path = Path(run_dir) / name
        if not path.is_file():
            return None
        lines = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    # A run killed mid-write leaves a torn last line; earlier lines are still good.
                    raise FasaError(f"{path}:{number} is not valid JSON", "delete the torn line or redo the run") from None
        return lines

    # -- spec snapshots (so reports need only the store) ------------------------------------
    def save_spec(self, spec_dump: dict[str, Any]) -> Path:
        folder = self.runs_root / spec_dump["name"]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / SPEC_SNAPSHOT
        tmp = _write_temp(folder, json.dumps(spec_dump, indent=2, sort_keys=True))
        os.replace(tmp, target)  # the latest spec wins; runs keep their own resolved config
        return target

    def spec_snapshots(self) -> dict[str, dict[str, Any]]:
        if not self.runs_root.is_dir():
            return {}
        return {p.parent.name: _read_json(p) for p in sorted(self.runs_root.glob(f"*/{SPEC_SNAPSHOT}"))}


def _write_temp(folder: Path, text: str) -> Path:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
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
