"""Scale-out settings of the resolved config: the learning rate follows the total batch
through mmengine's own auto_scale_lr (lvis-r50: 0.02 at 8 x 2 images, 0.0025 at 1 x 2), the
warm-up covers the same images, the CPU profile's lr is pinned, and a launched run gets
per-rank seeds, a CPU-capable DDP wrapper and FASA's statistics switch."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner

from fasa_cli.backend.config import build_config
from fasa_cli.backend.datasets import DatasetInfo
from fasa_cli.backend.launch import Launch, from_env
from fasa_cli.errors import FasaError
from fasa_cli.runconfig import FASASettings, RunConfig

DATA = DatasetInfo("embedded-tiny", Path("/tmp/nowhere"), "annotations/lvis_v1_train.json",
                   "annotations/lvis_v1_val.json", ["a", "b", "c"], ["r", "c", "f"], [2, 30, 400])


def _config(profile: str, world_size: int = 1, launcher: str = "none", **kwargs) -> dict:
    run = RunConfig(dataset="embedded-tiny", profile=profile, **kwargs)
    launch = Launch(launcher=launcher, world_size=world_size)
    return build_config(run, DATA, Path("/tmp/run"), seed=3, launch=launch)


def effective_lr(cfg: dict, world_size: int) -> float:
    """The lr the optimizer trains with once mmengine's Runner.scale_lr has run on this
    config at `world_size` processes (the Runner's own method, on a stand-in runner)."""
    spec = dict(cfg["optim_wrapper"]["optimizer"])
    optimizer = getattr(torch.optim, spec.pop("type"))([torch.nn.Parameter(torch.zeros(1))], **spec)
    wrapper = OptimWrapper(optimizer)
    runner = SimpleNamespace(_train_dataloader=cfg["train_dataloader"], world_size=world_size,
                             logger=logging.getLogger("scale-test"), param_schedulers=None)
    Runner.scale_lr(runner, wrapper, cfg.get("auto_scale_lr"))
    return optimizer.param_groups[0]["lr"]


def _warmup(cfg: dict) -> int:
    return next(s for s in cfg["param_scheduler"] if s["type"] == "LinearLR")["end"]


def test_paper_profile_lr_follows_the_total_batch():
    eight = _config("lvis-r50", world_size=8, launcher="pytorch")
    one = _config("lvis-r50", world_size=1)
    assert eight["auto_scale_lr"] == {"enable": True, "base_batch_size": 16}
    assert eight["train_dataloader"]["batch_size"] == 2
    assert effective_lr(eight, 8) == pytest.approx(0.02, abs=1e-12)
    assert effective_lr(one, 1) == pytest.approx(0.0025, abs=1e-12)
    # Warm-up over the same 8000 images: 500 iterations of 16, 4000 of 2.
    assert _warmup(eight) == 500 and _warmup(one) == 4000
    assert one["param_scheduler"][0]["start_factor"] == eight["param_scheduler"][0]["start_factor"]


def test_derived_gpu_profiles_scale_too():
    cfg = _config("lvis-r101", world_size=4, launcher="pytorch")
    assert effective_lr(cfg, 4) == pytest.approx(0.01) and _warmup(cfg) == 1000


# The compact CPU profile's effective learning rate, pinned: AdamW at 1e-3 for its own batch
# of 8, a 100-iteration warm-up, whatever the number of processes.
PINNED_COMPACT = (
    '{"auto_scale_lr": null, "batch_size": 8, "optim_wrapper": {"clip_grad": {"max_norm": 35, '
    '"norm_type": 2}, "optimizer": {"lr": 0.001, "type": "AdamW", "weight_decay": 0.05}, '
    '"type": "OptimWrapper"}, "param_scheduler": [{"begin": 0, "by_epoch": false, "end": 100, '
    '"start_factor": 0.001, "type": "LinearLR"}, {"begin": 0, "by_epoch": true, "end": 4, '
    '"gamma": 0.1, "milestones": [3], "type": "MultiStepLR"}]}'
)


@pytest.mark.parametrize(("world_size", "launcher"), [(1, "none"), (2, "pytorch"), (8, "slurm")])
def test_compact_profile_lr_is_pinned(world_size, launcher):
    cfg = _config("cpu-compact", world_size=world_size, launcher=launcher)
    lr_parts = {"optim_wrapper": cfg["optim_wrapper"], "param_scheduler": cfg["param_scheduler"],
                "auto_scale_lr": cfg.get("auto_scale_lr"), "batch_size": cfg["train_dataloader"]["batch_size"]}
    assert json.dumps(lr_parts, sort_keys=True) == PINNED_COMPACT
    assert effective_lr(cfg, world_size) == 1e-3  # exactly: no scaling step at all


def test_a_one_process_compact_config_is_untouched_by_the_launch_settings():
    run = RunConfig(dataset="embedded-tiny", profile="cpu-compact", fasa=FASASettings())
    plain = build_config(run, DATA, Path("/tmp/run"), seed=3)
    with_launch = build_config(run, DATA, Path("/tmp/run"), seed=3, launch=Launch())
    assert json.dumps(plain, sort_keys=True, default=str) == json.dumps(with_launch, sort_keys=True, default=str)
    assert plain["launcher"] == "none" and "model_wrapper_cfg" not in plain
    assert "diff_rank_seed" not in plain["randomness"]
    assert "fasa_stats" not in plain["custom_hooks"][-1]


def test_launched_run_gets_rank_seeds_a_cpu_ddp_wrapper_and_the_stats_switch():
    run = RunConfig(dataset="embedded-tiny", profile="cpu-compact", fasa=FASASettings())
    launch = Launch(launcher="pytorch", rank=1, world_size=2, fasa_stats="per_rank")
    cfg = build_config(run, DATA, Path("/tmp/run"), seed=3, launch=launch)
    assert cfg["launcher"] == "pytorch"
    assert cfg["randomness"] == {"seed": 3, "deterministic": False, "diff_rank_seed": True}
    assert cfg["train_dataloader"]["sampler"]["seed"] == 3  # one order, sharded by rank
    assert cfg["model_wrapper_cfg"]["type"] == "FASADistributedDataParallel"
    assert cfg["env_cfg"]["dist_cfg"]["backend"] == ("nccl" if torch.cuda.is_available() else "gloo")
    hook = cfg["custom_hooks"][-1]
    assert hook["type"] == "FASAHook" and hook["fasa_stats"] == "per_rank"
    # FASA's own seed (clustering's random state too) stays the run's: per-rank virtual
    # features come from the module's stream, not from a different config.
    assert cfg["model"]["roi_head"]["bbox_head"]["fasa"]["seed"] == 3


def test_launch_is_read_from_the_launchers_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    launch = from_env("pytorch")
    assert (launch.rank, launch.world_size, launch.local_rank, launch.is_main) == (3, 8, 3, False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    assert from_env("slurm").world_size == 16 and from_env("slurm").is_main
    assert from_env("none") == Launch()
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(FasaError, match="WORLD_SIZE"):
        from_env("pytorch")
    with pytest.raises(FasaError, match="--launcher"):
        from_env("mpi")
