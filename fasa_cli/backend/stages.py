"""Two-stage runs (cRT, BAGS: a method's `edit.two_stage`) inside one run folder.

Stage 1 trains in `<run>/stage1/` with its own config (the baseline: softmax CE, uniform
sampling, no FASA) and its own checkpoints, so it resumes like any run. When it has finished,
its last checkpoint, less the parameters the second stage re-initialises, is written once as
`<run>/stage1/stage2_init.pth` (weights only: no optimizer, schedule or epoch). Stage 2 is the
run's own config in the run folder: it starts from that file (`load_from`, not resumed: a fresh
optimizer and schedule, fc_cls initialised by the model's init) or, once it has checkpoints of
its own, resumes from them. A run killed in either stage and started again ends where an
uninterrupted one would.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Callable

from fasa_cli.errors import FasaError
from fasa_cli.rundir import last_checkpoint

FIRST_STAGE_KEY = "fasa_first_stage"  # in a built config: {"config": stage-1 config, "reinit": [...]}
STAGE_DIR = "stage1"
INIT_NAME = "stage2_init.pth"


def first_stage_config(run, first_stage: dict, build: Callable) -> dict:
    """Stage 1's config: `build(run_config)` of the run as the baseline without FASA, with the
    run's schedule scaled to stage 1's epochs."""
    from fasa_cli.methods.api import scale_schedule

    stage_run = run.model_copy(update={"method": first_stage["method"], "method_args": {}, "fasa": None})
    cfg = build(stage_run)
    scale_schedule(cfg, first_stage["epochs"])
    return {"config": cfg, "reinit": list(first_stage["reinit"])}


def pop_first_stage(cfg: dict) -> dict | None:
    return cfg.pop(FIRST_STAGE_KEY, None)


def prepare_second_stage(cfg: dict, run_dir: Path, build_runner: Callable, launch=None) -> None:
    """For a two-stage config: train (or finish) stage 1, then point `cfg` at its weights.
    A config without a first stage is left as it is."""
    stage = pop_first_stage(cfg)
    if stage is None:
        return
    if launch is not None and launch.distributed:
        raise FasaError("two-stage methods (cRT, BAGS) are built for one training process only",
                        "run them without a multi-process launcher")
    stage_dir = run_dir / STAGE_DIR
    init = stage_dir / INIT_NAME
    if not init.is_file():
        # Its own experiment name (mmengine appends the start time): mmengine keys loggers and
        # message hubs by it, and stage 2's runner may start within the same second.
        stage_cfg = dict(stage["config"], work_dir=str(stage_dir), experiment_name=STAGE_DIR)
        checkpoint = last_checkpoint(stage_dir)
        stage_cfg.update(resume=checkpoint is not None, load_from=str(checkpoint) if checkpoint else None)
        runner = build_runner(stage_cfg)
        runner.train()
        del runner
        gc.collect()
        final = last_checkpoint(stage_dir)
        if final is None:
            raise FasaError(f"stage 1 in {stage_dir} finished without a checkpoint",
                            "delete that folder and run again")
        write_init_checkpoint(final, init, stage["reinit"])
    cfg["load_from"] = str(init)


def write_init_checkpoint(source: Path, target: Path, reinit: list[str]) -> None:
    """`source`'s model weights without those under the `reinit` prefixes, written atomically."""
    import torch

    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(tuple(reinit))}
    meta = {k: v for k, v in checkpoint.get("meta", {}).items() if k in ("dataset_meta", "seed")}
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, target)
