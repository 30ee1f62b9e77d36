"""LVIS v1 dataset with an optional deterministic train/hold-out split.

The hold-out part serves FASA's validation-loss pass when the spec asks for
`val_split: train_holdout` instead of the dataset's val split.
"""

from __future__ import annotations

from mmdet.datasets import LVISV1Dataset
from mmdet.registry import DATASETS

_HASH = 2654435761  # Knuth's multiplicative hash: spreads consecutive ids evenly


def in_holdout(img_id: int, fraction: float) -> bool:
    return (img_id * _HASH) % 10_000 < fraction * 10_000


@DATASETS.register_module()
class FASALVISDataset(LVISV1Dataset):
    """LVISV1Dataset; `holdout=dict(fraction=0.1, part='train'|'holdout')` splits by image id."""

    def __init__(self, *args, holdout: dict | None = None, **kwargs):
        self.holdout = holdout
        super().__init__(*args, **kwargs)

    def filter_data(self) -> list[dict]:
        data = super().filter_data()
        if not self.holdout:
            return data
        keep_holdout = self.holdout["part"] == "holdout"
        fraction = float(self.holdout["fraction"])
        return [d for d in data if in_holdout(d["img_id"], fraction) == keep_holdout]
