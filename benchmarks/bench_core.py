"""Cost of one FASA training-step call at LVIS scale, vectorized vs a loop over classes.

One call = update the statistics with the batch's positive RoI features, sample virtual
features, run the classifier on them and compute the loss (FASA.update + FASA.virtual_loss).
Scale: C = 1203 classes, d = 1024, 1024 positive RoIs per call. The loop-over-classes
reference below exists only here, as the baseline for the speed-up; its statistics are
checked against the module's so both do the same work.

    .venv/bin/python -m benchmarks.bench_core [--quick]
writes results/benchmarks/fasa_core.json and fasa_core.md.
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
if str(REPO) not in sys.path:  # `python benchmarks/bench_core.py` from anywhere
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fasa_cli.core import FASA, FASAConfig  # noqa: E402

NUM_CLASSES, FEAT_DIM, NUM_POSITIVES = 1203, 1024, 1024
TARGET_SPEEDUP = 20.0


def lvis_like_counts(num_classes: int) -> torch.Tensor:
    """A long-tailed instance count per class (Zipf-like, 1 .. ~50k), deterministic."""
    rank = torch.arange(1, num_classes + 1, dtype=torch.float64)
    return (50_000 * rank.pow(-1.6)).clamp_min(1).round().long()


def label_batches(kind: str, counts: torch.Tensor, num: int, steps: int, seed: int) -> list[torch.Tensor]:
    """'lvis_like': labels drawn by instance frequency (few, mostly frequent classes per batch);
    'all_classes': uniform over classes (~700 distinct per batch, the worst case for a loop)."""
    gen = torch.Generator().manual_seed(seed)
    weights = counts.double() if kind == "lvis_like" else torch.ones(len(counts), dtype=torch.float64)
    return [torch.multinomial(weights, num, replacement=True, generator=gen) for _ in range(steps)]


class LoopReference:
    """The straightforward implementation: Python loops over classes for Eq. 2 and sampling."""

    def __init__(self, cfg: FASAConfig, init_p: torch.Tensor, device: torch.device):
        c, d = cfg.num_classes, cfg.feat_dim
        self.cfg, self.p = cfg, init_p.clone().to(device)
        self.mean = torch.zeros(c, d, device=device)
        self.spread = torch.zeros(c, d, device=device)
        self.seen = [0] * c
        self.spread_seen = [0] * c

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        m = self.cfg.momentum
        features = features.detach()
        for c in labels.unique().tolist():
            xc = features[labels == c]
            batch_mean = xc.mean(0)
            self.mean[c] = batch_mean if self.seen[c] == 0 else (1 - m) * self.mean[c] + m * batch_mean
            if xc.shape[0] > 1:
                batch_std = xc.std(0, unbiased=True)
                first = self.spread_seen[c] == 0
                self.spread[c] = batch_std if first else (1 - m) * self.spread[c] + m * batch_std
                self.spread_seen[c] += 1
            self.seen[c] += xc.shape[0]

    def virtual_loss(self, classifier, loss_fn) -> torch.Tensor:
        feats, labels = [], []
        for c in range(self.cfg.num_classes):
            if self.seen[c] and torch.rand(()).item() < self.p[c].item():
                noise = torch.randn(self.cfg.feat_dim, device=self.mean.device)
                feats.append(self.mean[c] + self.spread[c] * noise)
                labels.append(c)
        if not feats:
            return classifier(self.mean[:0]).sum() * 0.0
        logits = classifier(torch.stack(feats))
        return self.cfg.loss_weight * loss_fn(logits, torch.tensor(labels, device=self.mean.device))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device(device: torch.device, kind: str, repeats: int, counts: torch.Tensor) -> dict:
    cfg = FASAConfig(num_classes=NUM_CLASSES, feat_dim=FEAT_DIM)
    fasa = FASA(cfg, counts).to(device)
    loop = LoopReference(cfg, fasa.p, device)
    classifier = torch.nn.Linear(FEAT_DIM, NUM_CLASSES + 1).to(device)  # fc_cls with background
    gen = torch.Generator().manual_seed(0)
    class_centres = torch.randn(NUM_CLASSES, FEAT_DIM, generator=gen).relu()

    def features_for(labels: torch.Tensor) -> torch.Tensor:
        noise = 0.3 * torch.randn(len(labels), FEAT_DIM, generator=gen)
        return (class_centres[labels] + noise).relu().to(device)

    # Every class observed once, as after the first epoch; sampling is on from epoch 1.
    warm_labels = torch.arange(NUM_CLASSES).repeat_interleave(2)
    warm = features_for(warm_labels)
    fasa.update(warm, warm_labels.to(device))
    loop.update(warm, warm_labels.to(device))
    fasa.set_epoch(1)

    batches = [(features_for(lab), lab.to(device)) for lab in label_batches(kind, counts, NUM_POSITIVES, repeats, 1)]
    vector_ms, loop_ms, virtual = [], [], []
    for feats, labels in batches:  # interleaved, so machine load hits both alike
        synchronize(device)
        start = time.perf_counter()
        fasa.update(feats, labels)
        loss = fasa.virtual_loss(classifier, F.cross_entropy)
        synchronize(device)
        vector_ms.append(1e3 * (time.perf_counter() - start))
        virtual.append(float(loss.detach()) != 0.0)

        synchronize(device)
        start = time.perf_counter()
        loop.update(feats, labels)
        loop.virtual_loss(classifier, F.cross_entropy)
        synchronize(device)
        loop_ms.append(1e3 * (time.perf_counter() - start))

    same_stats = torch.allclose(fasa.mean, loop.mean, atol=1e-5) and torch.allclose(
        fasa.spread, loop.spread, atol=1e-4
    )
    vec, ref = statistics.median(vector_ms), statistics.median(loop_ms)
    return {
        "device": str(device),
        "labels": kind,
        "distinct_classes_per_batch": statistics.median(len(b[1].unique()) for b in batches),
        "repeats": repeats,
        "vectorized_ms_median": round(vec, 3),
        "loop_reference_ms_median": round(ref, 3),
        "speedup": round(ref / vec, 1),
        "calls_with_virtual_features": f"{sum(virtual)}/{len(virtual)}",
        "reference_statistics_match": bool(same_stats),
        "meets_target": ref / vec >= TARGET_SPEEDUP,
    }


def buffer_bytes(module: torch.nn.Module) -> int:
    return sum(b.numel() * b.element_size() for b in module.buffers())


def bench_adapt(counts: torch.Tensor) -> dict:
    """Once per epoch: clustering (Fisher distance + DBSCAN) and the p update, LVIS scale, CPU."""
    fasa = FASA(FASAConfig(num_classes=NUM_CLASSES, feat_dim=FEAT_DIM), counts)
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(3)
    fasa.update(torch.randn(len(labels), FEAT_DIM, generator=gen).relu(), labels)
    signal = torch.rand(NUM_CLASSES, generator=gen)
    fasa.adapt(signal, torch.ones(NUM_CLASSES, dtype=torch.bool))
    start = time.perf_counter()
    info = fasa.adapt(signal * 0.9, torch.ones(NUM_CLASSES, dtype=torch.bool))
    return {"adapt_s": round(time.perf_counter() - start, 2), "num_groups": info["num_groups"]}


# The compact CPU profile's scale: 60 classes, 256-d box-head features, 8 images x 8 positives.
COMPACT = {"num_classes": 60, "feat_dim": 256, "positives": 64}


def bench_compact(repeats: int) -> dict:
    """One FASA call at the compact profile's scale, against that profile's measured training
    step (results/benchmarks/train_step.json, written by bench_train_step) when present."""
    c, d, n = COMPACT["num_classes"], COMPACT["feat_dim"], COMPACT["positives"]
    counts = lvis_like_counts(c)
    fasa = FASA(FASAConfig(num_classes=c, feat_dim=d), counts)
    classifier = torch.nn.Linear(d, c + 1)
    gen = torch.Generator().manual_seed(3)
    fasa.update(torch.randn(2 * c, d, generator=gen).relu(), torch.arange(c).repeat(2))
    fasa.set_epoch(1)
    times = []
    for labels in label_batches("lvis_like", counts, n, repeats, 4):
        feats = torch.randn(n, d, generator=gen).relu()
        start = time.perf_counter()
        fasa.update(feats, labels)
        fasa.virtual_loss(classifier, F.cross_entropy)
        times.append(1e3 * (time.perf_counter() - start))
    result = {"scale": COMPACT, "call_ms_median": round(statistics.median(times), 3)}
    step_file = REPO / "results" / "benchmarks" / "train_step.json"
    if step_file.exists():
        step_s = json.loads(step_file.read_text())["baseline_s"]
        result["compact_step_s"] = round(step_s, 3)
        result["fraction_of_step"] = round(result["call_ms_median"] / (1e3 * step_s), 5)
        result["meets_target"] = result["fraction_of_step"] < 0.01
    return result


def write_markdown(path: Path, report: dict) -> None:
    lines = [
        "# FASA core: one training-step call at LVIS scale",
        "",
        f"C = {NUM_CLASSES}, d = {FEAT_DIM}, {NUM_POSITIVES} positive RoIs per call; update + sample + "
        "fc_cls forward + loss. Median over repeats; the loop reference is timed in the same process, "
        "interleaved call by call.",
        "",
        "| device | labels | distinct classes | vectorized (ms) | loop reference (ms) | speed-up |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['device']} | {r['labels']} | {r['distinct_classes_per_batch']} | "
            f"{r['vectorized_ms_median']} | {r['loop_reference_ms_median']} | {r['speedup']}x |"
        )
    machine = report["machine"]
    lines += [
        "",
        f"Target: vectorized >= {TARGET_SPEEDUP:.0f}x faster than the loop reference in every row: "
        f"{'met' if report['meets_target'] else 'NOT met'}.",
        f"Module buffers: {report['buffer_bytes'] / 2**20:.1f} MiB (mean and spread, C x d float32 each, "
        "plus a few [C] vectors).",
    ]
    if "adapt" in report:
        lines.append(
            f"End-of-epoch adapt (Fisher distance + DBSCAN on CPU): {report['adapt']['adapt_s']} s "
            f"({report['adapt']['num_groups']} groups)."
        )
    compact = report.get("compact")
    if compact:
        line = (f"Compact CPU profile scale (C = {compact['scale']['num_classes']}, d = "
                f"{compact['scale']['feat_dim']}, {compact['scale']['positives']} positives): "
                f"{compact['call_ms_median']} ms per call")
        if "fraction_of_step" in compact:
            line += (f" = {100 * compact['fraction_of_step']:.2f}% of the profile's "
                     f"{compact['compact_step_s']} s training step (target < 1%: "
                     f"{'met' if compact['meets_target'] else 'NOT met'})")
        lines.append(line + ".")
    lines += [
        "Loop reference: Eq. 2 in a Python loop over the classes present in the batch (as the "
        "official code does), then one Bernoulli draw per class in a loop over all classes; its "
        "statistics are checked equal to the module's.",
        f"Machine: {machine['cpu_count']} CPUs, torch {machine['torch']} ({machine['torch_threads']} threads), "
        f"1-min load average {machine['load_average_1min_at_start']} at start, "
        f"{machine['platform']}; mode: {report['mode']}.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second run (fewer repeats, no adapt timing)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "fasa_core.json")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)  # other processes skew timings; record it
    repeats = 5 if args.quick else 40
    counts = lvis_like_counts(NUM_CLASSES)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        for kind in ("lvis_like", "all_classes"):
            results.append(bench_device(device, kind, repeats, counts))
            print(json.dumps(results[-1]))
    report = {
        "mode": "quick" if args.quick else "full",
        "scale": {"num_classes": NUM_CLASSES, "feat_dim": FEAT_DIM, "positives_per_call": NUM_POSITIVES},
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": all(r["meets_target"] for r in results),
        "buffer_bytes": buffer_bytes(FASA(FASAConfig(NUM_CLASSES, FEAT_DIM), counts)),
        "results": results,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_at_start": load_at_start,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    report["compact"] = bench_compact(repeats)
    if not args.quick:
        report["adapt"] = bench_adapt(counts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(args.out.with_suffix(".md"), report)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
