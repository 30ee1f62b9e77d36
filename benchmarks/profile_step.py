"""Where a compact (cpu-compact) Mask R-CNN training step and an inference pass spend time.

For each RoI op (mmcv's RoIAlign, BatchedRoIAlign) it runs a few training steps and
inference batches under torch.profiler and reports the top ops by self CPU time, plus
wall-clock per stage (data loading, preprocessing, backbone+neck, RPN, RoI extraction,
mask targets, heads, backward, optimiser) from module hooks.

    .venv/bin/python -m benchmarks.profile_step [--quick]
writes results/benchmarks/profile_step.json and profile_step.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OPS = ("RoIAlign", "BatchedRoIAlign")


class StageTimer:
    """Wall time per named stage; module hooks time forwards, `stage()` times code blocks."""

    def __init__(self):
        self.total = defaultdict(float)
        self._open = {}

    def start(self, name):
        self._open[name] = time.perf_counter()

    def stop(self, name):
        self.total[name] += time.perf_counter() - self._open.pop(name)

    def hook(self, module, name):
        module.register_forward_pre_hook(lambda *_: self.start(name))
        module.register_forward_hook(lambda *_: self.stop(name))

    def wrap(self, obj, attr, name):
        # Instance attribute only: times this model's calls, leaves the class untouched.
        original = getattr(obj, attr)

        def timed(*args, **kwargs):
            self.start(name)
            try:
                return original(*args, **kwargs)
            finally:
                self.stop(name)
        setattr(obj, attr, timed)


def _build(op: str, preset: str):
    import fasa_cli.mmdet_ext  # noqa: F401
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.runner import Runner

    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.runconfig import RunConfig

    register_all_modules(init_default_scope=True)
    data = resolve_dataset(f"embedded-{preset}")
    run = RunConfig(dataset=f"embedded-{preset}", profile="cpu-compact")
    cfg = build_config(run, data, Path("/tmp/fasa-profile"), seed=0)
    for key in ("bbox_roi_extractor", "mask_roi_extractor"):
        extractor = cfg["model"]["roi_head"][key]
        extractor["roi_layer"]["type"] = op
        extractor["type"] = "SingleRoIExtractor" if op == "RoIAlign" else "FASARoIExtractor"
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(cfg["model"]))
    model.init_weights()
    train_loader = Runner.build_dataloader(cfg["train_dataloader"], seed=0)
    test_loader = Runner.build_dataloader(cfg["test_dataloader"], seed=0)
    return model, train_loader, test_loader


def _instrument(model, timer: StageTimer) -> None:
    timer.hook(model.backbone, "backbone")
    timer.hook(model.neck, "neck")
    timer.hook(model.rpn_head, "rpn_head (fwd)")
    rh = model.roi_head
    timer.hook(rh.bbox_roi_extractor, "roi extractor box (fwd)")
    timer.hook(rh.mask_roi_extractor, "roi extractor mask (fwd)")
    timer.hook(rh.bbox_head, "bbox_head (fwd)")
    timer.hook(rh.mask_head, "mask_head (fwd)")
    timer.wrap(model.rpn_head, "loss_and_predict", "rpn loss+proposals")
    timer.wrap(rh.mask_head, "get_targets", "mask targets")
    timer.wrap(rh.bbox_head, "loss_and_target", "bbox loss+targets")
    timer.wrap(rh, "loss", "roi_head loss (all)")


def _top_ops(prof, n: int = 15) -> list[dict]:
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2),
             "share": round(e.self_cpu_time_total / total, 4)} for e in rows]


def profile_op(op: str, preset: str, steps: int, test_batches: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    model, train_loader, test_loader = _build(op, preset)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    timer = StageTimer()
    _instrument(model, timer)
    it = iter(train_loader)

    def step(batch):
        with record_function("data_preprocessor"):
            timer.start("data_preprocessor")
            data = model.data_preprocessor(batch, training=True)
            timer.stop("data_preprocessor")
        with record_function("forward+loss"):
            timer.start("forward+loss (all)")
            losses = model.loss(data["inputs"], data["data_samples"])
            loss, _ = model.parse_losses(losses)
            timer.stop("forward+loss (all)")
        with record_function("backward"):
            timer.start("backward")
            optimizer.zero_grad()
            loss.backward()
            timer.stop("backward")
        with record_function("optimizer"):
            timer.start("optimizer")
            optimizer.step()
            timer.stop("optimizer")

    for _ in range(2):  # warm-up outside the profile
        step(next(it))
    timer.total.clear()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("data loading"):
                timer.start("data loading")
                batch = next(it)
                timer.stop("data loading")
            step(batch)
    wall = (time.perf_counter() - start) / steps
    train = {"step_s": round(wall, 4),
             "stages_s_per_step": {k: round(v / steps, 4) for k, v in sorted(timer.total.items())},
             "top_ops": _top_ops(prof)}

    model.eval()
    timer.total.clear()
    batches = []
    for batch in test_loader:
        batches.append(batch)
        if len(batches) == test_batches:
            break
    images = sum(len(b["inputs"]) for b in batches)
    start = time.perf_counter()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            model.test_step(batch)
    wall = time.perf_counter() - start
    infer = {"images": images, "s_per_image": round(wall / max(images, 1), 5),
             "stages_s_per_image": {k: round(v / max(images, 1), 5) for k, v in sorted(timer.total.items())},
             "top_ops": _top_ops(prof)}
    return {"train": train, "inference": infer}


def _md_ops(rows: list[dict]) -> list[str]:
    out = ["| op | calls | self ms | share |", "| --- | ---: | ---: | ---: |"]
    out += [f"| `{r['op']}` | {r['calls']} | {r['self_ms']:.1f} | {r['share']:.1%} |" for r in rows]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, few steps")
    args = parser.parse_args(argv)
    preset, steps, test_batches = ("tiny", 3, 2) if args.quick else ("small", 10, 8)
    import torch

    result = {"benchmark": "profile_step", "profile": "cpu-compact", "dataset": f"embedded-{preset}",
              "steps": steps, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "mode": "quick" if args.quick else "full"}
    for op in OPS:
        result[op] = profile_op(op, preset, steps, test_batches)
        print(op, json.dumps(result[op]["train"]["stages_s_per_step"]), flush=True)

    out_dir = REPO / "results" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "profile_step.json").write_text(json.dumps(result, indent=2))
    lines = ["# Profile of a cpu-compact training step and inference pass", "",
             f"{result['dataset']}, batch 8, {steps} profiled steps after 2 warm-up steps, "
             f"{result['threads']} torch threads on {result['cpus']} CPUs. Stage times are wall "
             "clock from module hooks (nested: 'forward+loss (all)' contains the heads; 'roi_head "
             "loss (all)' contains extractors, heads and targets).", ""]
    for op in OPS:
        tr, inf = result[op]["train"], result[op]["inference"]
        lines += [f"## RoI op: {op}", "", f"Training step: {tr['step_s']:.3f} s "
                  f"(profiler on). Inference: {inf['s_per_image'] * 1e3:.1f} ms per image.", "",
                  "| stage (train) | s per step | share of step |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {v:.4f} | {v / tr['step_s']:.1%} |" for k, v in tr["stages_s_per_step"].items()]
        lines += ["", "Top ops, training (self CPU time):", ""] + _md_ops(tr["top_ops"])
        lines += ["", "Top ops, inference:", ""] + _md_ops(inf["top_ops"][:8]) + [""]
    (out_dir / "profile_step.md").write_text("\n".join(lines))
    print(f"wrote {out_dir / 'profile_step.md'}")


if __name__ == "__main__":
    main()
