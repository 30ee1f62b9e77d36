"""Inference time of the compact CPU Mask R-CNN: mmdet's one-by-one mask paste (old) against
BatchedPasteMaskHead's chunked paste (new), and where an inference batch goes.

Two models with the same weights (random, or a run's checkpoint) take turns batch by batch on
the same test batches, so machine noise hits both alike; medians and their ratio are reported,
and every output (boxes, scores, labels, masks) of the two is compared for bit-identity.

    .venv/bin/python -m benchmarks.bench_inference [--quick] [--checkpoint run/epoch_4.pth --method eql]
writes results/benchmarks/inference.json and inference.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.profile_step import StageTimer  # noqa: E402

HEADS = {"old": "FCNMaskHead", "new": "BatchedPasteMaskHead"}


def _models(preset: str, method: str, checkpoint: str | None):
    import torch

    import fasa_cli.mmdet_ext  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.runner import Runner

    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.runconfig import RunConfig

    register_all_modules(init_default_scope=True)
    data = resolve_dataset(f"embedded-{preset}")
    run = RunConfig(dataset=f"embedded-{preset}", profile="cpu-compact", method=method)
    cfg = build_config(run, data, Path("/tmp/fasa-bench"), seed=0)
    torch.manual_seed(0)
    state = None
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    models = {}
    for name, head in HEADS.items():
        model_cfg = ConfigDict(cfg["model"])
        model_cfg.roi_head.mask_head.type = head
        models[name] = MODELS.build(model_cfg).eval()
        if state is None:
            state = models[name].state_dict()
        models[name].load_state_dict(state)
    return models, Runner.build_dataloader(cfg["test_dataloader"], seed=0)


def _same_outputs(a, b) -> bool:
    import torch

    for x, y in zip(a, b):
        p, q = x.pred_instances, y.pred_instances
        if not all(torch.equal(getattr(p, k), getattr(q, k)) for k in ("bboxes", "scores", "labels", "masks")):
            return False
    return True


def time_side_by_side(models, loader, warmup: int, batches: int) -> dict:
    import torch

    batches = max(1, min(batches, len(loader) - warmup))  # the tiny set has few test batches
    it = iter(loader)
    data = [next(it) for _ in range(warmup + batches)]
    timers = {name: StageTimer() for name in models}
    for name, model in models.items():  # per-stage wall time, instance attributes only
        timer, roi_head = timers[name], model.roi_head
        timer.wrap(roi_head, "predict_mask", "mask branch")
        timer.wrap(roi_head.mask_head, "predict_by_feat", "mask paste")
        timer.wrap(roi_head, "predict_bbox", "box branch")
        timer.wrap(model, "extract_feat", "backbone + neck")
        timer.wrap(model.rpn_head, "predict", "rpn")
    times = {name: [] for name in models}
    identical = True
    order = list(models)
    with torch.no_grad():
        for i, batch in enumerate(data):
            if i == warmup:
                for timer in timers.values():
                    timer.total.clear()
            outputs = {}
            for name in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                outputs[name] = models[name].test_step(batch)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
            identical &= _same_outputs(outputs["old"], outputs["new"])
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "old_s_per_batch": medians["old"], "new_s_per_batch": medians["new"],
        "ratio": medians["new"] / medians["old"], "outputs_identical": bool(identical),
        "stages_s_per_batch": {name: {k: v / batches for k, v in t.total.items()} for name, t in timers.items()},
        "batches": batches, "images_per_batch": len(data[0]["inputs"]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, few batches")
    parser.add_argument("--checkpoint", default=None, help="a run's checkpoint (default: random weights)")
    parser.add_argument("--method", default="baseline", help="the method the checkpoint was trained with")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, the main job's)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    preset, warmup, batches = ("tiny", 1, 3) if args.quick else ("small", 2, 12)
    models, loader = _models(preset, args.method, args.checkpoint)
    timing = time_side_by_side(models, loader, warmup, batches)
    result = {
        "benchmark": "inference", "profile": "cpu-compact", "dataset": f"embedded-{preset}",
        "weights": args.checkpoint or "random", "method": args.method, **timing,
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "load_avg_1min": os.getloadavg()[0], "platform": platform.platform()},
        "mode": "quick" if args.quick else "full",
    }
    out_dir = REPO / "results" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "inference.json").write_text(json.dumps(result, indent=2))
    st = timing["stages_s_per_batch"]
    lines = [
        "# Inference (cpu-compact Mask R-CNN): mmdet's one-by-one mask paste vs the chunked paste", "",
        f"Median over {batches} test batches of {timing['images_per_batch']} images ({result['dataset']}, "
        f"weights: {result['weights']}); the two models alternate on the same batches, "
        f"{result['machine']['threads']} thread(s), {result['machine']['cpus']} CPUs, 1-min load "
        f"{result['machine']['load_avg_1min']:.1f}.", "",
        "| s per batch | FCNMaskHead (old) | BatchedPasteMaskHead (new) | new / old |",
        "| --- | ---: | ---: | ---: |",
        f"| whole test step | {timing['old_s_per_batch']:.3f} | {timing['new_s_per_batch']:.3f} | {timing['ratio']:.3f} |",
    ]
    for stage in st["old"]:
        old, new = st["old"][stage], st["new"].get(stage, float("nan"))
        lines.append(f"| {stage} | {old:.3f} | {new:.3f} | {new / old:.3f} |")
    lines += ["", f"Every output (boxes, scores, labels, masks) bit-identical: "
              f"{'yes' if timing['outputs_identical'] else 'NO'}.", ""]
    (out_dir / "inference.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
