"""Training-step cost of FASA inside the compact CPU Mask R-CNN (issue target: < 2% time), and
the RoI op's speed-up (issue 12 target: step <= 2/3 of mmcv RoIAlign's).

Time: four models -- baseline and FASA, each with mmcv's RoIAlign ("old") and with
BatchedRoIAlign ("new"), all from the same initial weights -- take
turns step by step on the same batches in one process (rotating order, same RNG seed per
step), so machine noise hits all alike; ratios of medians are reported. The losses of the
old and new op on the first step (identical weights and batch) are compared too.
Memory: peak RSS of one child process per model doing the same steps (a process's peak
cannot be split between two models sharing it), plus the bytes of FASA's own state.

    .venv/bin/python -m benchmarks.bench_train_step [--quick]
writes results/benchmarks/train_step.json and train_step.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_OVERHEAD = 0.02
TARGET_SPEED_RATIO = 2 / 3


def _setup(preset: str):
    import fasa_cli.mmdet_ext  # noqa: F401
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.runconfig import FASASettings, RunConfig

    register_all_modules(init_default_scope=True)
    data = resolve_dataset(f"embedded-{preset}")
    configs = {}
    for name, fasa in (("baseline", None), ("fasa", FASASettings(start_epoch=0))):
        run = RunConfig(dataset=f"embedded-{preset}", profile="cpu-compact", fasa=fasa)
        configs[name] = build_config(run, data, Path("/tmp/fasa-bench"), seed=0)
    loader = Runner.build_dataloader(configs["baseline"]["train_dataloader"], seed=0)
    return configs, loader


def _with_roi_op(model_cfg: dict, op: str) -> dict:
    import copy

    cfg = copy.deepcopy(model_cfg)
    for key in ("bbox_roi_extractor", "mask_roi_extractor"):
        extractor = cfg["roi_head"][key]
        extractor["roi_layer"]["type"] = op
        extractor["type"] = "SingleRoIExtractor" if op == "RoIAlign" else "FASARoIExtractor"
    return cfg


OPS = {"old": "RoIAlign", "new": "BatchedRoIAlign"}


def _models(configs, ops=("new",)):
    """{(method, op): model}; every model starts from the same weights (FASA state fresh)."""
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    torch.manual_seed(0)
    first = None
    models = {}
    for method in ("baseline", "fasa"):
        for op in ops:
            model = MODELS.build(ConfigDict(_with_roi_op(configs[method]["model"], OPS[op])))
            if first is None:
                model.init_weights()
                first = model
            else:
                model.load_state_dict(first.state_dict(), strict=False)
            models[method, op] = model
    return models


def _step(model, optimizer, batch):
    data = model.data_preprocessor(batch, training=True)
    losses = model.loss(data["inputs"], data["data_samples"])
    loss, _ = model.parse_losses(losses)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss)


def _optimizer(model):
    import torch

    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def _batches(loader, n):
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            return batches
    return batches


def _fasa_state_bytes(model) -> int:
    from fasa_cli.mmdet_ext.heads import fasa_heads

    return sum(b.numel() * b.element_size() for h in fasa_heads(model) for b in h.fasa.buffers())


def time_side_by_side(preset: str, warmup: int, steps: int) -> dict:
    import torch

    from fasa_cli.mmdet_ext.heads import fasa_heads

    configs, loader = _setup(preset)
    models = _models(configs, ops=("old", "new"))
    keys = list(models)
    optimizers = {k: _optimizer(m) for k, m in models.items()}
    batches = _batches(loader, warmup + steps)
    times = {k: [] for k in keys}
    first_loss = {}
    for i, batch in enumerate(batches):
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:  # rotate who goes first
            torch.manual_seed(i)  # same RoI sampling draws for all
            start = time.perf_counter()
            loss = _step(models[key], optimizers[key], batch)
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
            if i == 0:
                first_loss[key] = loss
    med = {k: statistics.median(v) for k, v in times.items()}
    virtual = sum(h.virtual_used for h in fasa_heads(models["fasa", "new"]))
    return {
        "baseline_s": med["baseline", "new"], "fasa_s": med["fasa", "new"],
        "overhead": med["fasa", "new"] / med["baseline", "new"] - 1,
        "baseline_old_op_s": med["baseline", "old"], "fasa_old_op_s": med["fasa", "old"],
        "speed_ratio_baseline": med["baseline", "new"] / med["baseline", "old"],
        "speed_ratio_fasa": med["fasa", "new"] / med["fasa", "old"],
        "first_step_loss": {f"{m}/{OPS[o]}": v for (m, o), v in first_loss.items()},
        "first_step_loss_max_abs_diff": max(
            abs(first_loss[m, "new"] - first_loss[m, "old"]) for m in ("baseline", "fasa")),
        "steps": steps, "virtual_features": virtual,
        "fasa_state_mib": _fasa_state_bytes(models["fasa", "new"]) / 2**20}


def _peak_rss_child(name: str, preset: str, steps: int, out) -> None:
    configs, loader = _setup(preset)
    model = _models(configs)[name, "new"]
    optimizer = _optimizer(model)
    for batch in _batches(loader, steps):
        _step(model, optimizer, batch)
    out.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_rss(preset: str, steps: int) -> dict:
    ctx = mp.get_context("spawn")
    peaks = {}
    for name in ("baseline", "fasa"):
        out = ctx.Queue()
        proc = ctx.Process(target=_peak_rss_child, args=(name, preset, steps, out))
        proc.start()
        peaks[name] = out.get()
        proc.join()
    return {"baseline_peak_rss_mib": peaks["baseline"], "fasa_peak_rss_mib": peaks["fasa"],
            "peak_ratio": peaks["fasa"] / peaks["baseline"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, few steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for all four models (default: torch's)")
    args = parser.parse_args(argv)
    preset, warmup, steps = ("tiny", 2, 6) if args.quick else ("small", 5, 40)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    timing = time_side_by_side(preset, warmup, steps)
    memory = peak_rss(preset, 10 if not args.quick else 3)
    result = {
        "benchmark": "train_step", "profile": "cpu-compact", "dataset": f"embedded-{preset}",
        **timing, **memory, "target_overhead": TARGET_OVERHEAD,
        "target_met": timing["overhead"] < TARGET_OVERHEAD,
        "target_speed_ratio": TARGET_SPEED_RATIO,
        "speed_target_met": max(timing["speed_ratio_baseline"], timing["speed_ratio_fasa"])
        <= TARGET_SPEED_RATIO,
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0],
                    "platform": platform.platform()},
        "mode": "quick" if args.quick else "full",
    }
    out_dir = REPO / "results" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_step.json").write_text(json.dumps(result, indent=2))
    t = timing
    (out_dir / "train_step.md").write_text("\n".join([
        "# Training step (cpu-compact Mask R-CNN): RoI op speed-up and FASA's cost", "",
        f"Median step time over {steps} steps; four models (baseline/FASA x mmcv RoIAlign/"
        f"BatchedRoIAlign, same initial weights) interleaved in one process on the same batches "
        f"({result['dataset']}, batch {8}, {result['machine']['threads']} threads, "
        f"{result['machine']['cpus']} CPUs).", "",
        "| step time (s) | mmcv RoIAlign (old) | BatchedRoIAlign (new) | new / old |",
        "| --- | ---: | ---: | ---: |",
        f"| baseline | {t['baseline_old_op_s']:.3f} | {t['baseline_s']:.3f} | "
        f"{t['speed_ratio_baseline']:.3f} |",
        f"| FASA | {t['fasa_old_op_s']:.3f} | {t['fasa_s']:.3f} | {t['speed_ratio_fasa']:.3f} |", "",
        f"Target: new step <= {TARGET_SPEED_RATIO:.3f} x old: "
        f"{'met' if result['speed_target_met'] else 'NOT met'}. First-step loss, old vs new op "
        f"(same weights and batch): max |diff| {t['first_step_loss_max_abs_diff']:.2e}.", "",
        "| FASA vs baseline (new op) | baseline | FASA | ratio |", "| --- | ---: | ---: | ---: |",
        f"| step time (s) | {t['baseline_s']:.3f} | {t['fasa_s']:.3f} | {1 + t['overhead']:.3f} |",
        f"| peak RSS (MiB, one process each) | {memory['baseline_peak_rss_mib']:.0f} | "
        f"{memory['fasa_peak_rss_mib']:.0f} | {memory['peak_ratio']:.3f} |", "",
        f"FASA state: {t['fasa_state_mib']:.3f} MiB; virtual features used: "
        f"{t['virtual_features']}.",
        f"Target: FASA adds < {TARGET_OVERHEAD:.0%} to the step time: "
        f"{'met' if result['target_met'] else 'NOT met'} ({t['overhead']:+.1%}).", ""]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
