"""`fasa verify`: re-run committed (row, seed) records and say whether they reproduce.

Two cases, decided per record before anything is compared:
- *same setting*: the re-run's code (no change since the record's commit to the code that
  computes numbers, CODE_PATHS), library versions, CPU model and features, thread count and
  data files equal the record's. Training on CPU is then deterministic, so every metric must be
  identical (timing and memory excepted).
- *different setting* (another CPU, other versions, changed code): bit-identity is not
  expected; the re-run reproduces the record when the paired 95 % bootstrap interval of
  (re-run minus record) over validation images includes 0 for AP and APr.
Either way the verdict says whether every metric came out identical: code that changed
without changing the numbers still reproduces its records bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fasa_cli.backend.provenance import same_machine_type
from fasa_cli.evaluation.bootstrap import paired_deltas
from fasa_cli.experiments.execute import THREADS_ENV, Runner, env_var, execute_run
from fasa_cli.experiments.spec import ExperimentSpec
from fasa_cli.experiments.store import ResultStore
from fasa_cli.paths import repo_root
from fasa_cli.registry import METRICS

# The code that computes a run's numbers: a change here may change them. Tables, reports,
# commands and specs are left out (a spec change shows as a different config hash, which
# the record check refuses before anything is compared); library versions are in the
# provenance.
CODE_PATHS = ("fasa_cli/core", "fasa_cli/methods", "fasa_cli/mmdet_ext", "fasa_cli/backend", "fasa_cli/data",
              "fasa_cli/evaluation", "fasa_cli/runconfig.py", "fasa_cli/rundir.py")
# Table 12's measurements of the machine (time and memory per iteration) are not results.
UNTIMED = tuple(name for name, entry in METRICS.items() if entry.paper_table == "12")
INTERVAL_METRICS = ("AP", "APr")


@dataclass
class Verdict:
    row: str
    seed: int
    case: str          # "same setting" | "different setting"
    reasons: list[str]  # why the setting differs ([] for the same setting)
    reproduced: bool
    detail: str
    identical: bool = False  # every metric equal to the record's (timing and memory excepted)
    record_id: str = ""
    rerun: dict | None = None  # what re-ran it: code version and machine (for the verification log)


def code_changes_since(commit: str | None) -> list[str]:
    """Files of CODE_PATHS that differ between `commit` and the working tree (['?'] if unknown)."""
    root = repo_root()
    if not commit or root is None:
        return ["unknown code version"]
    try:
        out = subprocess.run(["git", "-C", str(root), "diff", "--name-only", commit, "--", *CODE_PATHS],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ["git is not available"]
    if out.returncode != 0:
        return [f"commit {commit[:10]} is not in this clone"]
    return [line for line in out.stdout.splitlines() if line.strip()]


def compare(committed: dict, rerun: dict, store: ResultStore, scratch: ResultStore,
            seed_sd: dict[str, float] | None = None) -> Verdict:
    """`seed_sd`: the row's seed-to-seed sd per metric in the committed records; a retrained
    model in another setting is, in effect, another seed, so the detail also says whether
    its difference lies within what two seeds differ by (1.96 * sqrt(2) * sd)."""
    reasons = same_machine_type(committed.get("provenance", {}), rerun.get("provenance", {}))
    changed = code_changes_since(committed.get("code_version", {}).get("commit"))
    if committed.get("code_version", {}).get("dirty"):
        changed = ["the record was made from uncommitted code", *changed]
    if changed:
        reasons.append("code changed: " + ", ".join(changed[:5]) + (" …" if len(changed) > 5 else ""))
        reasons.extend(_at_commit_hint(committed))
    if not committed.get("provenance"):
        reasons.append("the record has no provenance")
    ours, theirs = rerun["metrics"], committed["metrics"]
    names = sorted((set(ours) | set(theirs)) - set(UNTIMED))
    differing = [n for n in names if not _same(ours.get(n), theirs.get(n))]
    row, seed = committed["row"], committed["seed"]
    if not reasons:
        detail = "all metrics identical" if not differing else "differ: " + ", ".join(
            f"{n} {_pct(theirs.get(n))} -> {_pct(ours.get(n))}" for n in differing[:6])
        return Verdict(row, seed, "same setting", [], not differing, detail, identical=not differing)
    a, b = scratch.matches(rerun), store.matches(committed)
    if a is None or b is None:
        return Verdict(row, seed, "different setting", reasons, not differing,
                       "all metrics identical" if not differing else "no match tables to compare",
                       identical=not differing)
    deltas = paired_deltas([a], [b], INTERVAL_METRICS)
    inside = all(not d.excludes_zero for d in deltas.values())
    detail = "; ".join(f"Δ{m} {100 * d.delta:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]" for m, d in deltas.items())
    if not differing:
        detail = "all metrics identical anyway; " + detail
    elif seed_sd:
        bounds = {m: 1.96 * math.sqrt(2) * seed_sd[m] for m in deltas if m in seed_sd}
        within = all(abs(deltas[m].delta) <= bound for m, bound in bounds.items())
        detail += ("; within" if within else "; outside") + " two seeds' spread (" + ", ".join(
            f"{m} ±{100 * bound:.2f}" for m, bound in bounds.items()) + ")"
    return Verdict(row, seed, "different setting", reasons, inside, detail, identical=not differing)


def seed_spread(store: ResultStore, spec: str, row: str, profile: str, dataset: str) -> dict[str, float] | None:
    """Sample sd over seeds of the row's committed AP and APr (None below 3 seeds)."""
    records = store.find(spec=spec, row=row, profile=profile, dataset=dataset)
    if len(records) < 3:
        return None
    spread = {}
    for metric in INTERVAL_METRICS:
        values = [r["metrics"][metric] for r in records if r["metrics"].get(metric) is not None]
        if len(values) >= 3:
            spread[metric] = statistics.stdev(values)
    return spread or None


def verify(spec: ExperimentSpec, profile: str, pairs: list[tuple[str, int]], store: ResultStore,
           scratch: ResultStore, runner: Runner, dataset: str | None = None, progress=None) -> list[Verdict]:
    """Re-run each (row, seed) into `scratch` (never into the committed store) and compare."""
    verdicts = []
    for row, seed in pairs:
        key = _key(spec, row, seed, profile, dataset)
        committed = store.read_record(key)
        if committed is None:
            continue
        committed = _own(store, committed)
        if scratch.is_finished(key):  # an earlier verification's run: train again, keep it aside
            scratch.move_aside(key)
        with _threads_of(committed):
            rerun = execute_run(spec, row, seed, profile, scratch, runner, progress, dataset, reuse=False)
        verdict = compare(committed, rerun, store, scratch, seed_spread(store, spec.name, row, profile, key.dataset))
        verdict.record_id = committed.get("record_id", "")
        verdict.rerun = {"code_version": rerun.get("code_version"), "machine": _machine(rerun.get("provenance", {}))}
        verdicts.append(verdict)
    return verdicts


def _threads_of(committed: dict):
    """Train with the record's thread count (a part of its setting on CPU), unless
    FASA_NUM_THREADS asks for another."""
    threads = (committed.get("provenance") or {}).get("threads")
    if os.environ.get(THREADS_ENV) or not threads:
        return contextlib.nullcontext()
    return env_var(THREADS_ENV, str(threads))


def _at_commit_hint(committed: dict) -> list[str]:
    """Where bit-identity can still be checked: a checkout of the record's own commit."""
    commit = (committed.get("code_version") or {}).get("commit")
    return [f"for bit-identity, verify from a checkout of the record's commit: "
            f"git worktree add ../at-{commit[:8]} {commit[:10]}"] if commit else []


def _machine(provenance: dict) -> dict:
    cpu = provenance.get("cpu") or {}
    return {"cpu": cpu.get("model"), "capability": cpu.get("torch_capability"), "threads": provenance.get("threads"),
            "gpu": provenance.get("gpu"), "versions": provenance.get("versions")}


def log_path(store: ResultStore, spec: str, profile: str, dataset: str) -> Path:
    """The committed verification log of one table: the latest verdict of every (row, seed)."""
    return Path(store.root) / "verified" / f"{spec}--{profile}--{dataset}.json"


def write_log(store: ResultStore, spec: str, profile: str, dataset: str, verdicts: list[Verdict], when: str) -> Path:
    """Merge `verdicts` into the table's verification log (atomically; other entries kept)."""
    import json

    from fasa_cli.jsonio import write_json

    path = log_path(store, spec, profile, dataset)
    log = json.loads(path.read_text()) if path.exists() else {}
    for v in verdicts:
        log[f"{v.row}/seed{v.seed}"] = {"record_id": v.record_id, "case": v.case, "reproduced": v.reproduced,
                                        "identical": v.identical, "detail": v.detail, "reasons": v.reasons, "verified_at": when,
                                        "verified_with": v.rerun}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, log)


def _key(spec, row, seed, profile, dataset):
    from fasa_cli.experiments.execute import run_key

    return run_key(spec, row, seed, profile, spec.resolve(row, profile, dataset).dataset)


def _own(store: ResultStore, record: dict) -> dict:
    """A reused record's numbers are its source run's; compare against that run."""
    source = store.record_by_id(record["reused_from"]) if record.get("reused_from") else None
    return {**source, "row": record["row"]} if source else record


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def _pct(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def default_scratch(store: ResultStore) -> ResultStore:
    return ResultStore(Path(store.root) / "verify")
