"""Count thresholds of long-tail methods (EQL's lambda, BAGS's group bins, RFS's t) on data other than LVIS.

The papers set them on LVIS v1 counts (EQL: image frequency < 0.0011; BAGS: 10 / 100 / 1000
training instances). On the embedded data (60 classes, 2-400 instances per class) those
numbers would put every class in one group, so they are scaled the way the embedded preset
scales LVIS's frequency thresholds (fasa_cli/data/embedded.py): on a log scale between the
data's smallest and largest per-class count, a threshold sits where LVIS v1's share of classes
below it puts it,

    t = n_min * (n_max / n_min) ** share,   n over the classes with a count > 0,

so a scaled threshold splits the data's classes in about the proportions the LVIS threshold
splits LVIS's. The shares are counted on LVIS v1's category file (eqlv2's
mmdet/utils/lvis_v1_categories.py, see METHODS.md): 815 of 1203 classes have an image
frequency below 0.0011; 200 / 412 / 334 / 257 classes have [0,10) / [10,100) / [100,1000) /
[1000,inf) training instances. RFS's t = 1e-3 is about 100 of LVIS v1's ~100k training images, the
common / frequent boundary: the 337 rare and 461 common classes (798) lie below it.
"""

from __future__ import annotations

from typing import Literal, Sequence

LVIS_V1_CLASSES = 1203
EQL_TAIL_SHARE = 815 / LVIS_V1_CLASSES
RFS_REPEAT_SHARE = 798 / LVIS_V1_CLASSES
BAGS_BIN_SHARES = (200 / LVIS_V1_CLASSES, 612 / LVIS_V1_CLASSES, 946 / LVIS_V1_CLASSES)

ThresholdRule = Literal["auto", "lvis", "class_share"]


def resolve_rule(rule: ThresholdRule, dataset: str) -> str:
    """"auto": the paper's LVIS numbers on LVIS v1, class shares on any other data."""
    if rule != "auto":
        return rule
    return "lvis" if dataset == "lvis_v1" else "class_share"


def class_share_threshold(counts: Sequence[int], share: float) -> float:
    """The count below which about `share` of the classes fall, on the log count range."""
    present = [c for c in counts if c > 0]
    if not present:
        raise ValueError("no class has a training count: cannot place a count threshold")
    low, high = min(present), max(present)
    return low * (high / low) ** share
