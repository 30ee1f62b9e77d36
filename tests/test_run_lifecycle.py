"""A run's process tree, as a user meets it: the trainer dies with its command, and a
second command for the same run refuses at once (subprocesses on the tiny data)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPEC = """\
table: "T"
title: lifecycle
paper_setting: embedded data
profiles: [cpu-compact]
dataset: {cpu-compact: embedded-tiny}
base:
  train: {epochs: 3, batch_size: 2}
metrics: [AP]
seeds: [0]
rows:
  - name: base
    label: Baseline
    baseline: true
"""


def _fasa(*args: str) -> list[str]:
    return [sys.executable, "-c", "from fasa_cli.cli import main; main()", *args]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(tmp_path: Path) -> tuple[subprocess.Popen, list[str]]:
    spec = tmp_path / "life.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    command = _fasa("train", str(spec), "--results-dir", str(tmp_path / "results"))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, command


def _wait_for_trainer(proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        kids = [c for c in _children(proc.pid) if _alive(c)]
        # multiprocessing's resource tracker is a child too; the trainer is the busy one.
        trainers = [c for c in kids if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")]
        if trainers:
            return trainers[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the trainer never started")


def test_the_trainer_dies_when_its_command_is_killed(tiny_data_dir, tmp_path):
    proc, _ = _start(tmp_path)
    try:
        trainer = _wait_for_trainer(proc)
        os.kill(proc.pid, signal.SIGKILL)  # the command only, not its process group
        proc.wait(timeout=10)
        deadline = time.time() + 10
        while _alive(trainer) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(trainer), "the trainer outlived its command"
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None


def test_a_second_command_for_a_run_in_progress_refuses_at_once(tiny_data_dir, tmp_path):
    first, command = _start(tmp_path)
    try:
        _wait_for_trainer(first)
        started = time.time()
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert "is being trained by pid" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert time.time() - started < 60
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
