"""How a run's processes were launched: one process, torchrun (mmengine's `pytorch` launcher)
or Slurm (`slurm`), read from the environment the launcher set.

Every rank runs the same `fasa` command. Rank 0 alone locks the run folder, writes its
files and records the result; the other ranks train and evaluate beside it. The launch is
not part of a run's config (its identity): it goes into the run's provenance instead.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass

from fasa_cli.errors import FasaError

LAUNCHERS = ("none", "pytorch", "slurm")
# FASA's statistics under DDP: "sync" merges every rank's per-class moments each iteration
# (every rank holds the same state); "per_rank": each rank keeps its own (official code).
FASA_STATS = ("sync", "per_rank")

# The variables each launcher sets: (rank, world size, local rank).
_ENV = {"pytorch": ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
        "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")}


@dataclass(frozen=True)
class Launch:
    launcher: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    fasa_stats: str = "sync"

    @property
    def distributed(self) -> bool:
        return self.launcher != "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict:
        return asdict(self)


def check_choice(launcher: str, fasa_stats: str = "sync") -> None:
    if launcher not in LAUNCHERS:
        raise FasaError(f"unknown --launcher '{launcher}'", f"use one of: {', '.join(LAUNCHERS)}")
    if fasa_stats not in FASA_STATS:
        raise FasaError(f"unknown --fasa-stats '{fasa_stats}'", f"use one of: {', '.join(FASA_STATS)}")


def from_env(launcher: str = "none", fasa_stats: str = "sync") -> Launch:
    """This process's place in the launch; a launcher without its variables is one line."""
    check_choice(launcher, fasa_stats)
    if launcher == "none":
        return Launch(fasa_stats=fasa_stats)
    names = _ENV[launcher]
    missing = [n for n in names[:2] if n not in os.environ]
    if missing:
        how = ("start every rank with torchrun: torchrun --nproc-per-node N --no-python fasa ..."
               if launcher == "pytorch" else "run the command under srun (or sbatch) with --ntasks N")
        raise FasaError(f"--launcher {launcher} needs {', '.join(missing)} in the environment", how)
    try:
        rank, world = int(os.environ[names[0]]), int(os.environ[names[1]])
        local = int(os.environ.get(names[2], rank))
    except ValueError:
        raise FasaError(f"--launcher {launcher}: {names[0]}/{names[1]} are not integers",
                        "start the ranks through the launcher itself") from None
    if not 0 <= rank < world:
        raise FasaError(f"--launcher {launcher}: rank {rank} is outside world size {world}",
                        "start the ranks through the launcher itself")
    return Launch(launcher, rank, world, local, fasa_stats)


def dist_backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(launch: Launch) -> None:
    """Join the ranks' process group before the runner is built (mmengine then reuses it).

    On a GPU, mmengine's own init_dist (device selection, nccl); on CPU its `pytorch` and
    `slurm` paths call torch.cuda.set_device, so gloo is set up here from the same variables.
    """
    import torch
    import torch.distributed as torch_dist

    if not launch.distributed or torch_dist.is_initialized():
        return
    if launch.launcher == "slurm":  # what mmengine's slurm path sets up, for both devices
        os.environ.setdefault("MASTER_PORT", "29500")
        if "MASTER_ADDR" not in os.environ:
            nodes = os.environ.get("SLURM_NODELIST", "localhost")
            try:
                first = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True,
                                       text=True, timeout=30).stdout.split()
            except (OSError, subprocess.TimeoutExpired):
                first = []
            os.environ["MASTER_ADDR"] = first[0] if first else "localhost"
        os.environ.update(RANK=str(launch.rank), WORLD_SIZE=str(launch.world_size),
                          LOCAL_RANK=str(launch.local_rank))
    if torch.cuda.is_available():
        from mmengine.dist import init_dist

        init_dist("pytorch", backend="nccl")
    else:
        torch_dist.init_process_group("gloo", rank=launch.rank, world_size=launch.world_size)


def broadcast_from_main(value):
    """Rank 0's `value` on every rank (the value itself in a single process)."""
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        return value
    box = [value]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
