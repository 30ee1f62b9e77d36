"""Does torch.compile (inductor) speed up the compact CPU training step? (issue 12)

The backbone and neck hold about 60 % of a cpu-compact step (convolution and batch norm,
benchmarks/profile_step.py) and see one fixed input shape, so they are the part a compiler
could fuse without recompiling per batch. Two copies of the baseline model from the same
weights -- eager, and with backbone and neck compiled -- take turns on the same batches in one
process (alternating order, same RNG seed per step); the ratio of median step times is
reported, with the first-step losses of both (compiled code may round differently).

    .venv/bin/python -m benchmarks.bench_compile [--quick] [--threads 1]
writes results/benchmarks/compile.json and compile.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_train_step import TARGET_SPEED_RATIO, _batches, _models, _optimizer, _setup, _step  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, few steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, as the runs)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    preset, warmup, steps = ("tiny", 3, 8) if args.quick else ("small", 3, 30)
    configs, loader = _setup(preset)
    eager = _models(configs, ops=("old",))["baseline", "old"]
    compiled = copy.deepcopy(eager)
    compiled.backbone = torch.compile(compiled.backbone)
    compiled.neck = torch.compile(compiled.neck)
    models = {"eager": eager, "compiled": compiled}
    optimizers = {k: _optimizer(m) for k, m in models.items()}
    times = {k: [] for k in models}
    first_loss, compile_s = {}, 0.0
    for i, batch in enumerate(_batches(loader, warmup + steps)):
        for key in (("eager", "compiled") if i % 2 else ("compiled", "eager")):
            torch.manual_seed(i)
            start = time.perf_counter()
            loss = _step(models[key], optimizers[key], batch)
            took = time.perf_counter() - start
            if i == 0:
                first_loss[key] = loss
                compile_s += took if key == "compiled" else 0.0
            if i >= warmup:
                times[key].append(took)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["compiled"] / med["eager"]
    result = {"benchmark": "compile", "profile": "cpu-compact", "dataset": f"embedded-{preset}",
              "steps": steps, "eager_s": med["eager"], "compiled_s": med["compiled"], "ratio": ratio,
              "first_compile_step_s": compile_s, "first_step_loss": first_loss,
              "first_step_loss_abs_diff": abs(first_loss["eager"] - first_loss["compiled"]),
              "target_speed_ratio": TARGET_SPEED_RATIO, "speed_target_met": ratio <= TARGET_SPEED_RATIO,
              "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "load_avg_1min": os.getloadavg()[0]}}
    out_dir = REPO / "results" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compile.json").write_text(json.dumps(result, indent=2))
    (out_dir / "compile.md").write_text("\n".join([
        "# Training step with torch.compile'd backbone and neck (cpu-compact baseline)", "",
        f"Median step time over {steps} steps, eager and compiled copies (same initial weights) "
        f"alternating on the same batches ({result['dataset']}, batch 8, {args.threads} thread(s), "
        f"{os.cpu_count()} CPUs, 1-min load {result['machine']['load_avg_1min']:.1f}).", "",
        "| step time (s) | eager | compiled | compiled / eager |", "| --- | ---: | ---: | ---: |",
        f"| baseline | {med['eager']:.3f} | {med['compiled']:.3f} | {ratio:.3f} |", "",
        f"First compiled step (compilation): {compile_s:.0f} s. First-step loss |diff|: "
        f"{result['first_step_loss_abs_diff']:.2e}. Target (<= {TARGET_SPEED_RATIO:.3f}): "
        f"{'met' if result['speed_target_met'] else 'NOT met'}.", ""]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
