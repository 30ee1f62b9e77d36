"""Training-step cost of FASA inside the compact CPU Mask R-CNN (issue target: < 2% time).

Time: the baseline and the FASA model (same initial weights, same batches) take turns step
by step in one process, so machine noise hits both alike; the ratio of medians is reported.
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


def _setup(preset: str):
    import fasa_cli.mmdet_ext  # noqa: F401
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.experiments.config import FASASettings, RunConfig

    register_all_modules(init_default_scope=True)
    data = resolve_dataset(f"embedded-{preset}")
    configs = {}
    for name, fasa in (("baseline", None), ("fasa", FASASettings(start_epoch=0))):
        run = RunConfig(dataset=f"embedded-{preset}", profile="cpu-compact", fasa=fasa)
        configs[name] = build_config(run, data, Path("/tmp/fasa-bench"), seed=0)
    loader = Runner.build_dataloader(configs["baseline"]["train_dataloader"], seed=0)
    return configs, loader


def _models(configs):
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    torch.manual_seed(0)
    base = MODELS.build(ConfigDict(configs["baseline"]["model"]))
    base.init_weights()
    fasa = MODELS.build(ConfigDict(configs["fasa"]["model"]))
    fasa.load_state_dict(base.state_dict(), strict=False)  # identical weights; FASA state fresh
    return {"baseline": base, "fasa": fasa}


def _step(model, optimizer, batch):
    data = model.data_preprocessor(batch, training=True)
    losses = model.loss(data["inputs"], data["data_samples"])
    loss, _ = model.parse_losses(losses)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


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

    configs, loader = _setup(preset)
    models = _models(configs)
    optimizers = {k: _optimizer(m) for k, m in models.items()}
    batches = _batches(loader, warmup + steps)
    times = {k: [] for k in models}
    virtual = 0
    from fasa_cli.mmdet_ext.heads import fasa_heads

    for i, batch in enumerate(batches):
        for name in (("baseline", "fasa") if i % 2 == 0 else ("fasa", "baseline")):
            torch.manual_seed(i)  # same RoI sampling draws for both
            start = time.perf_counter()
            _step(models[name], optimizers[name], batch)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    virtual = sum(h.virtual_used for h in fasa_heads(models["fasa"]))
    base, fasa = statistics.median(times["baseline"]), statistics.median(times["fasa"])
    return {"baseline_s": base, "fasa_s": fasa, "overhead": fasa / base - 1,
            "steps": steps, "virtual_features": virtual,
            "fasa_state_mib": _fasa_state_bytes(models["fasa"]) / 2**20}


def _peak_rss_child(name: str, preset: str, steps: int, out) -> None:
    configs, loader = _setup(preset)
    model = _models(configs)[name]
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
    args = parser.parse_args(argv)
    preset, warmup, steps = ("tiny", 2, 6) if args.quick else ("small", 5, 40)
    import torch

    timing = time_side_by_side(preset, warmup, steps)
    memory = peak_rss(preset, 10 if not args.quick else 3)
    result = {
        "benchmark": "train_step", "profile": "cpu-compact", "dataset": f"embedded-{preset}",
        **timing, **memory, "target_overhead": TARGET_OVERHEAD,
        "target_met": timing["overhead"] < TARGET_OVERHEAD,
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0],
                    "platform": platform.platform()},
        "mode": "quick" if args.quick else "full",
    }
    out_dir = REPO / "results" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_step.json").write_text(json.dumps(result, indent=2))
    (out_dir / "train_step.md").write_text("\n".join([
        "# FASA in the training step (cpu-compact Mask R-CNN)", "",
        f"Median step time over {steps} steps, baseline and FASA interleaved in one process on "
        f"the same batches ({result['dataset']}, batch {8}).", "",
        "| | baseline | FASA | ratio |", "| --- | ---: | ---: | ---: |",
        f"| step time (s) | {timing['baseline_s']:.3f} | {timing['fasa_s']:.3f} | "
        f"{1 + timing['overhead']:.3f} |",
        f"| peak RSS (MiB, one process each) | {memory['baseline_peak_rss_mib']:.0f} | "
        f"{memory['fasa_peak_rss_mib']:.0f} | {memory['peak_ratio']:.3f} |", "",
        f"FASA state: {timing['fasa_state_mib']:.3f} MiB; virtual features used: "
        f"{timing['virtual_features']}.",
        f"Target: FASA adds < {TARGET_OVERHEAD:.0%} to the step time: "
        f"{'met' if result['target_met'] else 'NOT met'} ({timing['overhead']:+.1%}).", ""]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
