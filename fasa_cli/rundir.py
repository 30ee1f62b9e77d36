"""A run folder's own files: its lock, its checkpoint pointer and its append-only logs.

Both the experiment layer (which owns the result store) and the training backend use
these, so they live below both. Everything here keeps a run folder relocatable: nothing
stores an absolute path that reading depends on.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from fasa_cli.errors import FasaError

LOCK_NAME = ".fasa-run.lock"
CHECKPOINT_POINTER = "last_checkpoint"  # written by mmengine's CheckpointHook
MATCHES_FILE = "eval_matches.npz"       # per-image outcomes of the test split (evaluation.bootstrap)


@contextmanager
def run_lock(run_dir: Path, what: str = "trained") -> Iterator[None]:
    """Hold the run folder's exclusive lock, or fail at once if another process holds it.

    An flock dies with its process, so a killed run never leaves a stale lock behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise FasaError(
                f"run folder {run_dir} is being {what} by {owner}",
                "wait for that command to finish, or stop it, then run this one again",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def last_checkpoint(run_dir: Path) -> Path | None:
    """The folder's newest checkpoint, found next to the pointer whatever path it records
    (mmengine writes an absolute path, which breaks once the folder is moved or copied)."""
    pointer = run_dir / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    name = Path(pointer.read_text(encoding="utf-8").strip()).name
    checkpoint = run_dir / name
    if not name or not checkpoint.is_file():
        raise FasaError(
            f"{pointer} names checkpoint '{name}', which is not in {run_dir}",
            "restore that file, or delete the pointer to train the run from the start",
        )
    return checkpoint


def engine_default_hooks() -> dict:
    """mmengine's default hooks for every run, detection or classification: a checkpoint each
    epoch (the last two kept, which `last_checkpoint` resumes from) and the sampler's seed."""
    return dict(
        timer=dict(type="IterTimerHook"),
        logger=dict(type="LoggerHook", interval=20),
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=2),
        sampler_seed=dict(type="DistSamplerSeedHook"))


def read_jsonl(path: Path) -> list[Any]:
    """The lines of an append-only JSON log; a torn last line (a kill or a full disk during
    the append) is dropped, a torn line before the end is corruption and an error."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise FasaError(f"{path}:{number} is not valid JSON", "delete that line, or redo the run") from None
    return entries


def rewrite_jsonl(path: Path, entries: list[Any]) -> None:
    """Replace the log atomically (temp file + rename): a crash leaves the old or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    os.replace(tmp, path)


def append_jsonl(path: Path, entry: Any) -> None:
    """Append one entry as a whole line: the log is rewritten with the entry added, so a
    torn line can never be followed by good ones."""
    rewrite_jsonl(path, [*read_jsonl(path), entry])
