"""The classification data as mmengine sees it: a dataset of (uint8 image, label) from a
registered classification dataset, and an epoch-seeded sampler (uniform or class-balanced)."""

from __future__ import annotations

import numpy as np
import torch
from mmengine.registry import DATA_SAMPLERS, DATASETS
from torch.utils.data import Dataset, Sampler


@DATASETS.register_module()
class ClsArrayDataset(Dataset):
    """One split of a classification dataset (fasa_cli.data.classification), images as uint8
    CHW tensors; `max_images` keeps a fixed seeded subset."""

    def __init__(self, dataset: str, split: str, max_images: int | None = None, subset_seed: int = 0):
        from fasa_cli.data.classification import load_cls_dataset

        data = load_cls_dataset(dataset)
        images, labels = data.split(split)
        if max_images is not None and max_images < len(labels):
            keep = np.sort(np.random.default_rng(subset_seed).permutation(len(labels))[:max_images])
            images, labels = images[keep], labels[keep]
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.metainfo = dict(classes=tuple(data.class_names))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index], label=self.labels[index])


@DATA_SAMPLERS.register_module()
class ClsEpochSampler(Sampler):
    """Each epoch's order drawn from a generator seeded by (seed, epoch), so it needs no state to
    resume: a shuffle, or from epoch `balanced_from` of the last phase on, a class-balanced draw
    with replacement (each image weighted 1 / its class's count, as many draws as images).
    With several phases (`phase_epochs` each), epochs count within the phase."""

    def __init__(self, dataset, seed: int = 0, shuffle: bool = True, balanced_from: int | None = None,
                 phase_epochs: int | None = None, phases: int = 1):
        self.dataset, self.seed, self.shuffle = dataset, int(seed or 0), shuffle
        self.balanced_from, self.phase_epochs, self.phases = balanced_from, phase_epochs, phases
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def balanced(self) -> bool:
        if self.balanced_from is None:
            return False
        if self.phase_epochs:
            phase, local = divmod(self.epoch, self.phase_epochs)
            return phase >= self.phases - 1 and local >= self.balanced_from
        return self.epoch >= self.balanced_from

    def __iter__(self):
        n = len(self.dataset)
        if not self.shuffle:
            return iter(range(n))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.balanced():
            labels = self.dataset.labels
            weights = 1.0 / torch.bincount(labels).double()[labels]
            order = torch.multinomial(weights, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen)
        return iter(order.tolist())

    def __len__(self) -> int:
        return len(self.dataset)
