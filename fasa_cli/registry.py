"""The one registry of names a spec or a command may use: methods, profiles, datasets, metrics.

A name listed with built=False is known to the suite (a paper table uses it) but not
implemented yet; using it is a clear error, never a silent fallback.

Methods are the exception to hand-set flags: this file is only their catalogue of paper names.
A method is built when a module in fasa_cli/methods/ registers it (`@register_method`), so
`METHODS[name].built` is derived from the registrations, and a registered method that the
catalogue does not list yet appears with its registration's summary and table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from fasa_cli.errors import FasaError, NotBuiltError


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    built: bool
    paper_table: str = ""
    task: str = "detection"  # profiles and datasets: the kind of run (RunConfig.task) they serve


def _table(*entries: Entry) -> dict[str, Entry]:
    return {e.name: e for e in entries}


class _MethodCatalogue(Mapping):
    """Paper names of methods; an entry's `built` is whether fasa_cli.methods registers it."""

    def __init__(self, entries: dict[str, Entry]):
        self._planned = entries

    @staticmethod
    def _registered() -> dict:
        from fasa_cli.methods import registered_methods  # lazy: the plug-ins import torch

        return registered_methods()

    def __contains__(self, name: object) -> bool:
        return name in self._planned or name in self._registered()

    def __getitem__(self, name: str) -> Entry:
        registered = self._registered()
        if name in self._planned:
            return replace(self._planned[name], built=name in registered)
        method = registered[name]  # KeyError for an unknown name, as a dict would
        return Entry(name, method.summary, True, method.table)

    def __iter__(self) -> Iterator[str]:
        yield from self._planned
        yield from (n for n in self._registered() if n not in self._planned)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def planned(self) -> dict[str, Entry]:
        """The catalogue as written here, without importing the plug-ins (built unset)."""
        return dict(self._planned)


# Long-tail methods that change the host's sampler, loss or schedule (Tables 2, 4, 15).
# FASA itself is not a method here: it is a plug-in switched on by a run's `fasa` block,
# and a run may combine it with one method. `built` below is a placeholder: see above.
METHODS = _MethodCatalogue(_table(
    Entry("baseline", "Mask R-CNN, softmax cross-entropy, uniform image sampling", False, "1,2,4"),
    Entry("rfs", "Repeat factor sampling, threshold 1e-3 (Gupta et al., 2019)", False, "4"),
    Entry("eql", "Equalization loss v1 (Tan et al., 2020)", False, "4"),
    Entry("crt", "Classifier re-training, 12+12 schedule (Kang et al., 2020)", False, "4"),
    Entry("bags", "Balanced group softmax (Li et al., 2020)", False, "4"),
    Entry("seesaw", "Seesaw loss, p=0.8 q=2.0 (Wang et al., 2021)", False, "4,5"),
    Entry("smote", "SMOTE interpolation of RoI features (Chawla et al., 2002)", False, "2"),
    Entry("moex", "MoEx moment exchange in the classifier (Li et al., CVPR'21)", False, "2"),
    Entry("instaboost", "InstaBoost copy-paste augmentation (Fang et al., ICCV'19)", False, "2"),
    Entry("yin", "Feature transfer learning (Yin et al., CVPR'19)", False, "2"),
    Entry("liu", "Deep feature augmentation with margins (Liu et al., CVPR'20)", False, "2"),
    Entry("chu", "Feature space augmentation for long-tailed data (Chu et al., ECCV'20)", False, "2"),
    Entry("nms_resampling", "NMS re-sampling (Wu et al., 2020)", False, "15"),
    Entry("simcal", "SimCal calibration with dual-head inference (Wang et al., 2020)", False, "6"),
    Entry("ldam", "LDAM loss with deferred re-weighting (Cao et al., 2019)", False, "7,10,11"),
    Entry("tde", "De-confound-TDE causal classifier (Tang et al., 2020)", False, "7"),
    Entry("m2m", "Major-to-minor translation (Kim et al., 2020)", False, "7"),
))

# Model + schedule profiles; `cpu-compact` is the small model for the embedded data.
PROFILES = _table(
    Entry("cpu-compact", "Mask R-CNN, ResNet-18/32 FPN-64, 128 px, for the embedded data on CPU", True),
    Entry("lvis-r50", "Mask R-CNN R50-FPN, LVIS v1 protocol of the paper (24 epochs)", True, "1-4"),
    Entry("lvis-r101", "Mask R-CNN R101-FPN, LVIS v1 protocol", True, "5,13"),
    Entry("lvis-x101", "Mask R-CNN X101-32x8d-FPN, LVIS v1 protocol", True, "5"),
    Entry("lvis-cascade-r101", "Cascade Mask R-CNN R101-FPN, LVIS v1 protocol", True, "5,13"),
    Entry("coco-lt-r50", "Mask R-CNN R50-FPN, COCO-LT protocol (12 epochs, class-agnostic heads)", True, "6"),
    Entry("cpu-compact-deep", "cpu-compact with a ResNet-34 backbone (CPU counterpart of lvis-r101)", True, "5,13"),
    Entry("cpu-compact-x", "cpu-compact with a slim ResNeXt-50 4x4d backbone (counterpart of lvis-x101)", True, "5"),
    Entry("cpu-compact-cascade", "3-stage Cascade Mask R-CNN, ResNet-34 compact (counterpart of lvis-cascade-r101)",
          True, "5,13"),
    Entry("cpu-compact-coco-lt", "cpu-compact with class-agnostic box and mask heads (counterpart of coco-lt-r50)",
          True, "6"),
    Entry("cifar-resnet32", "ResNet-32 classifier, CIFAR-100-LT protocol (200 epochs)", True, "7,10,11",
          task="classification"),
    Entry("cifar-resnet34", "ResNet-34 classifier, CIFAR-100-LT (Chu et al.'s setting, 200 epochs)", True, "7",
          task="classification"),
    Entry("cpu-compact-cls", "slim ResNet-32 classifier for the embedded classification data on CPU", True,
          task="classification"),
    Entry("cpu-compact-cls-r34", "slim ResNet-34 classifier for the embedded classification data on CPU", True,
          task="classification"),
)

DATASETS = _table(
    Entry("embedded-tiny", "generated long-tailed LVIS-format data, CI smoke size", True),
    Entry("embedded-small", "generated long-tailed LVIS-format data, the main job's size", True),
    Entry("embedded-medium", "generated long-tailed LVIS-format data, larger", True),
    Entry("lvis_v1", "LVIS v1.0 on disk ($FASA_LVIS_ROOT)", True),
    Entry("coco_lt", "COCO-LT sampled train JSON ($FASA_COCO_LT_TRAIN) + COCO 2017 ($FASA_COCO_ROOT)", True, "6"),
    Entry("embedded-coco-lt-tiny", "generated COCO-LT stand-in (80 classes, COCO format), CI smoke size", True, "6"),
    Entry("embedded-coco-lt-small", "generated COCO-LT stand-in (80 classes, COCO format), Table 6 on CPU", True, "6"),
    Entry("cifar100_lt", "CIFAR-100-LT built from the CIFAR-100 pickles on disk ($FASA_CIFAR100_ROOT)", True,
          "7,10,11", task="classification"),
    Entry("embedded-cifar-lt", "generated long-tailed 32 px classification data, 100 classes, ratio 100", True,
          task="classification"),
    Entry("embedded-cifar-lt-tiny", "generated long-tailed classification data, CI smoke size", True,
          task="classification"),
)

# Columns a table may ask for. Detection metrics are mask AP unless prefixed `bbox_`.
METRICS = _table(
    *(Entry(m, f"mask {m}", True) for m in ("AP", "AP50", "AP75", "APr", "APc", "APf")),
    *(Entry(f"bbox_{m}", f"box {m}", True) for m in ("AP", "AP50", "AP75", "APr", "APc", "APf")),
    *(Entry(m, f"mask AP on COCO-LT bin {m[-1]}", True, "6") for m in ("AP1", "AP2", "AP3", "AP4")),
    *(Entry(f"bbox_{m}", f"box AP on COCO-LT bin {m[-1]}", True, "6") for m in ("AP1", "AP2", "AP3", "AP4")),
    Entry("accuracy", "top-1 accuracy (classification)", True, "7,10,11"),
    *(Entry(f"acc_{g}", f"top-1 accuracy on the {g}-shot classes (classification)", True)
      for g in ("many", "medium", "few")),
    *(Entry(f"E_{e}", f"TIDE {e} error (mask dAP)", True, "8")
      for e in ("cls", "loc", "both", "dupe", "bkg", "miss")),
    *(Entry(f"AP_{kind}{group}", f"AP^{kind} {group or 'all'} (Dave et al., 2021)", True, "13")
      for kind in ("fixed", "pool") for group in ("", "_r", "_c", "_f")),
    Entry("train_mem_gb", "peak training memory (GB)", True, "12"),
    Entry("train_s_per_iter", "training time per iteration (s)", True, "12"),
    Entry("train_s_per_iter_std", "sd of the training time per iteration over iterations (s)", True, "12"),
    Entry("train_rss_gb", "peak resident memory of the training process (GB, CPU RSS)", True, "12"),
    Entry("train_gpu_mem_gb", "peak GPU memory allocated in training (GB; NaN without CUDA)", True, "12"),
)

_KINDS = {"method": METHODS, "profile": PROFILES, "dataset": DATASETS, "metric": METRICS}


def lookup(kind: str, name: str, *, require_built: bool = True) -> Entry:
    """The entry for `name`; an unknown name lists the valid ones, an unbuilt one says so."""
    table = _KINDS[kind]
    if name not in table:
        raise FasaError(f"unknown {kind} '{name}'", f"use one of: {', '.join(table)}")
    entry = table[name]
    if require_built and not entry.built:
        where = f" (paper Table {entry.paper_table})" if entry.paper_table else ""
        raise NotBuiltError(f"{kind} '{name}'{where}")
    return entry
