"""Added time per training step of each classifier-level method, as a ratio to the FASA core.

At LVIS scale (C = 1203 classes, d = 1024, 512 sampled RoIs per step, a quarter of them
positive, labels drawn by LVIS-like frequency), each method's plug-in call is timed with the
backward pass of what it returns (its extra losses, or its replacement of the classification
loss), side by side with FASA's (update + virtual_loss + backward), interleaved step by step
in one process so machine load hits all alike. MoEx and Liu replace the clean classification
loss, so their added time is their call minus the clean loss's forward + backward (timed in
the same loop); Yin's includes its decoder before fc_cls.

    .venv/bin/python -m benchmarks.bench_methods [--quick]
writes results/benchmarks/methods.json and methods.md.
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
if str(REPO) not in sys.path:  # `python benchmarks/bench_methods.py` from anywhere
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.bench_core import lvis_like_counts  # noqa: E402
from fasa_cli.core import FASA, FASAConfig  # noqa: E402
from fasa_cli.methods import registered_methods  # noqa: E402
from fasa_cli.methods.feature import ClassifierBatch  # noqa: E402

NUM_CLASSES, FEAT_DIM, NUM_ROIS, POSITIVE_SHARE = 1203, 1024, 512, 0.25
REPLACES_CLS_LOSS = ("moex", "liu")


def lvis_frequency(counts: torch.Tensor) -> list[str]:
    """r / c / f by LVIS's thresholds (<= 10, <= 100 training images), counts standing in."""
    return ["r" if n <= 10 else "c" if n <= 100 else "f" for n in counts.tolist()]


def make_steps(counts: torch.Tensor, steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(NUM_CLASSES, FEAT_DIM, generator=gen).relu()
    positives = int(NUM_ROIS * POSITIVE_SHARE)
    out = []
    for _ in range(steps):
        fg = torch.multinomial(counts.double(), positives, replacement=True, generator=gen)
        labels = torch.cat([fg, torch.full((NUM_ROIS - positives,), NUM_CLASSES)])
        base = torch.cat([centres[fg], torch.zeros(NUM_ROIS - positives, FEAT_DIM)])
        out.append(((base + 0.3 * torch.randn(NUM_ROIS, FEAT_DIM, generator=gen)).relu(), labels))
    return out


def _batch(x: torch.Tensor, labels: torch.Tensor, fc: torch.nn.Module, scores=None) -> ClassifierBatch:
    weights = torch.ones(len(labels))
    return ClassifierBatch(
        features=x, labels=labels, weights=weights, cls_score=fc(x).detach() if scores is None else scores,
        num_classes=NUM_CLASSES, classifier=fc,
        rois_loss=lambda logits, y, w: (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum().clamp_min(1),
        samples_loss=lambda logits, y: F.cross_entropy(logits, y))


def run(repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    counts = lvis_like_counts(NUM_CLASSES)
    frequency = lvis_frequency(counts)
    methods = {n: m for n, m in sorted(registered_methods().items()) if m.feature is not None}
    plugins = {n: m.feature(m.resolve_args({}), NUM_CLASSES, FEAT_DIM, counts.tolist(), frequency)
               for n, m in methods.items()}
    fasa = FASA(FASAConfig(num_classes=NUM_CLASSES, feat_dim=FEAT_DIM), counts)
    fc = torch.nn.Linear(FEAT_DIM, NUM_CLASSES + 1)
    # Warm-up steps fill banks and statistics (every class seen, as after the first epoch).
    warm_labels = torch.arange(NUM_CLASSES).repeat_interleave(2)
    warm_x = torch.randn(len(warm_labels), FEAT_DIM).relu()
    fasa.update(warm_x, warm_labels)
    for x, labels in make_steps(counts, warmup, 1) + [(warm_x, warm_labels)]:
        for name, plugin in plugins.items():
            feats = plugin.transform(x)
            batch = _batch(feats, labels, fc)
            plugin.cls_loss(batch), plugin.losses(batch)
    fasa.set_epoch(1)
    for plugin in plugins.values():
        plugin.set_epoch(1)

    times: dict[str, list[float]] = {n: [] for n in ["fasa", "clean_cls_loss", *plugins]}
    for x, labels in make_steps(counts, repeats, 2):
        pos = labels < NUM_CLASSES
        start = time.perf_counter()
        fasa.update(x[pos], labels[pos])
        fasa.virtual_loss(fc, F.cross_entropy).backward()
        times["fasa"].append(1e3 * (time.perf_counter() - start))

        leaf = x.clone().requires_grad_(True)
        start = time.perf_counter()
        F.cross_entropy(fc(leaf), labels).backward()
        times["clean_cls_loss"].append(1e3 * (time.perf_counter() - start))

        for name, plugin in plugins.items():
            leaf = x.clone().requires_grad_(True)
            with torch.no_grad():
                scores = fc(leaf)  # the host's real logits: not the plug-in's cost
            start = time.perf_counter()
            batch = _batch(plugin.transform(leaf), labels, fc, scores)
            terms = list(plugin.losses(batch).values())
            replaced = plugin.cls_loss(batch)
            if replaced is not None:
                terms.append(replaced)
            if terms:
                sum(terms).backward()
            times[name].append(1e3 * (time.perf_counter() - start))
        fc.zero_grad(set_to_none=True)

    median = {n: statistics.median(v) for n, v in times.items()}
    rows = []
    for name in plugins:
        added = median[name] - (median["clean_cls_loss"] if name in REPLACES_CLS_LOSS else 0.0)
        rows.append({"method": name, "call_ms_median": round(median[name], 3), "added_ms": round(added, 3),
                     "ratio_to_fasa": round(added / median["fasa"], 2)})
    return {"fasa_ms_median": round(median["fasa"], 3), "clean_cls_loss_ms_median": round(median["clean_cls_loss"], 3),
            "repeats": repeats, "methods": rows}


def write_markdown(path: Path, report: dict) -> None:
    lines = [
        "# Classifier-level methods: added time per training step, against the FASA core",
        "",
        f"C = {NUM_CLASSES}, d = {FEAT_DIM}, {NUM_ROIS} RoIs per step ({int(100 * POSITIVE_SHARE)}% positive), "
        "CPU; each call timed with the backward pass of what it returns, interleaved with FASA's "
        f"(update + virtual_loss + backward: {report['fasa_ms_median']} ms). MoEx and Liu replace the clean "
        f"classification loss ({report['clean_cls_loss_ms_median']} ms forward + backward), which is subtracted.",
        "",
        "| method | call (ms) | added per step (ms) | ratio to FASA |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in report["methods"]:
        lines.append(f"| {r['method']} | {r['call_ms_median']} | {r['added_ms']} | {r['ratio_to_fasa']}x |")
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
              f"1-min load average {m['load_average_1min_at_start']} at start, {m['platform']}; "
              f"median over {report['repeats']} steps; mode: {report['mode']}.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second run (fewer repeats)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = run(repeats=5 if args.quick else 30, warmup=2 if args.quick else 5)
    report["mode"] = "quick" if args.quick else "full"
    report["machine"] = {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                         "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                         "load_average_1min_at_start": None if load is None else round(load, 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "methods.json").write_text(json.dumps(report, indent=2))
    write_markdown(args.out / "methods.md", report)
    print((args.out / "methods.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
