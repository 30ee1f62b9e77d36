"""What runs log for Figs. 1b and 5: the true-class probability measured in the test pass, the
final class means, and (slow) a tiny real ablation whose records draw both figures."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("mmdet")

from fasa_cli.core import FASA, FASAConfig  # noqa: E402
from fasa_cli.figure_artefacts import decode_class_means  # noqa: E402
from fasa_cli.mmdet_ext.figure_logs import TrueClassProbability, class_means_summary  # noqa: E402


class _Extractor(nn.Module):
    def forward(self, feats, rois):
        return torch.zeros(rois.shape[0], 4)


class _Head(nn.Module):
    def __init__(self, logits: torch.Tensor, activation=None):
        super().__init__()
        self.logits = logits
        if activation is not None:  # a loss with its own activation (Seesaw)
            self.custom_cls_channels = True
            self.loss_cls = type("Loss", (), {"get_activation": staticmethod(activation)})()

    def forward(self, x):
        return self.logits, None


def _model(logits, activation=None) -> nn.Module:
    model = nn.Module()
    model.roi_head = nn.Module()
    model.roi_head.bbox_roi_extractor = _Extractor()
    model.roi_head.bbox_head = _Head(logits, activation)
    return model


def _sample(boxes, labels, scale):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    sample = DetDataSample(metainfo={"scale_factor": scale})
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                       labels=torch.tensor(labels))
    return sample


# Image 0 (resized x2): one ground truth of class 1 at [0, 0, 10, 10] in the original image.
# Image 1 (not resized): class 0 at [5, 5, 15, 15] and an unmatched class 2 box far away.
SAMPLES = [([[0, 0, 10, 10]], [1], (2.0, 2.0)), ([[5, 5, 15, 15], [80, 80, 90, 90]], [0, 2], (1.0, 1.0))]
ROIS = torch.tensor([
    [0, 0, 0, 20, 20],    # IoU 1 with the class-1 box (after scaling)
    [0, 0, 0, 19, 20],    # IoU 0.95
    [0, 0, 0, 10, 10],    # IoU 0.25: not matched
    [0, 30, 30, 40, 40],  # nothing
    [1, 5, 5, 15, 15],    # IoU 1 with class 0
], dtype=torch.float32)
LOGITS = torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0], [5.0, 5.0, 5.0, 5.0],
                       [9.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0]])  # 3 classes + background


def _run(probe: TrueClassProbability, model: nn.Module) -> None:
    model.roi_head.bbox_head(model.roi_head.bbox_roi_extractor([torch.zeros(1)], ROIS))
    probe.add_batch([_sample(*s) for s in SAMPLES])


def test_true_class_probability_matches_rois_at_iou_half_in_the_resized_frame():
    probe = TrueClassProbability(num_classes=3)
    model = _model(LOGITS)
    assert probe.attach(model)
    _run(probe, model)
    softmax = torch.softmax(LOGITS.double(), dim=1)
    summary = probe.summary(["a", "b", "c"], ["f", "c", "r"], [30, 20, 10])
    assert summary["rois"] == [1, 2, 0]
    assert summary["gt_instances"] == [1, 1, 1]
    assert summary["mean_prob"][1] == pytest.approx(float((softmax[0, 1] + softmax[1, 1]) / 2))
    assert summary["mean_prob"][0] == pytest.approx(float(softmax[4, 0]))
    assert summary["mean_prob"][2] is None  # a ground truth no RoI matched: no value, not 0
    assert summary["frequency"] == ["f", "c", "r"] and summary["train_instance_count"] == [30, 20, 10]
    probe.detach()  # hooks gone: a later forward adds nothing
    model.roi_head.bbox_head(model.roi_head.bbox_roi_extractor([torch.zeros(1)], ROIS))
    probe.add_batch([_sample(*s) for s in SAMPLES])
    assert probe.rois.tolist() == [1, 2, 0]


def test_true_class_probability_uses_the_losss_own_activation():
    def sigmoid_scores(logits):  # stands in for Seesaw's get_activation
        return torch.sigmoid(logits)

    probe = TrueClassProbability(num_classes=3)
    model = _model(LOGITS, sigmoid_scores)
    probe.attach(model)
    _run(probe, model)
    assert probe.summary(None, ["f", "c", "r"], None)["mean_prob"][0] == pytest.approx(float(torch.sigmoid(LOGITS[4, 0])))


def test_a_detector_without_a_box_head_is_left_alone():
    assert not TrueClassProbability(3).attach(nn.Linear(2, 2))


def test_class_means_summary_keeps_distances_groups_and_clustering():
    fasa = FASA(FASAConfig(num_classes=5, feat_dim=6, clustering="meanshift"), [1] * 5)
    means = torch.randn(5, 6, generator=torch.Generator().manual_seed(0)) * 4
    fasa.mean.copy_(means)
    fasa.instances_seen.copy_(torch.tensor([3, 0, 5, 7, 2]))  # class 1 unseen
    fasa.groups.copy_(torch.tensor([0, -1, 0, 1, 1]))
    entry = class_means_summary(fasa, names=["a", "b", "c", "d", "e"])
    assert entry["class_ids"] == [0, 2, 3, 4] and entry["names"] == ["a", "c", "d", "e"]
    assert entry["groups"] == [0, 0, 1, 1] and entry["clustering"] == "meanshift"
    assert entry["components"] == 4 and entry["feat_dim"] == 6 and entry["explained_variance"] == pytest.approx(1.0)
    coords = decode_class_means(entry)
    seen = means[[0, 2, 3, 4]].double().numpy()

    def pairwise(x):
        return np.linalg.norm(x[:, None] - x[None], axis=-1)

    # Principal components of 4 points keep every distance (up to float16 rounding).
    assert np.allclose(pairwise(coords), pairwise(seen), atol=2e-3 * pairwise(seen).max())
    class_wise = FASA(FASAConfig(num_classes=2, feat_dim=3, adapt_by="class"), [1, 1])
    class_wise.instances_seen.fill_(1)
    assert class_means_summary(class_wise)["clustering"] == "none (class-wise)"


@pytest.mark.slow
def test_a_tiny_ablation_records_what_figs_1b_and_5_need(tiny_data_dir, tmp_path):
    """Two real rows (baseline, FASA with Mean-shift groups) on the embedded tiny data: their
    records carry the true-class probability and the class means, and the report draws
    Figs. 1b and 5 from them."""
    import textwrap

    from rich.console import Console

    from fasa_cli.backend import run_training
    from fasa_cli.experiments.execute import run_ablation
    from fasa_cli.experiments.figures import class_embedding_frame, true_class_probability_frame
    from fasa_cli.experiments.report import write_report
    from fasa_cli.experiments.spec import load_spec
    from fasa_cli.experiments.store import ResultStore

    path = tmp_path / "figs_tiny.yaml"
    path.write_text(textwrap.dedent("""\
        table: "F"
        title: Tiny figure runs
        paper_setting: embedded tiny
        profiles: [cpu-compact]
        dataset: {cpu-compact: embedded-tiny}
        base:
          train: {epochs: 1, batch_size: 4, val_loss_images: 8}
        metrics: [AP, APr]
        seeds: [0]
        rows:
          - {name: base, label: Baseline, baseline: true}
          - {name: fasa, label: FASA (Mean-shift), set: {fasa: {clustering: meanshift, start_epoch: 0}}}
        """))
    spec = load_spec(path)
    store = ResultStore(tmp_path / "results")
    run_ablation(spec, None, [0], store, run_training, Console(file=io.StringIO()))
    base = store.find(row="base")[0]
    fasa = store.find(row="fasa")[0]
    for record in (base, fasa):
        tcp = record["true_class_prob"]
        assert len(tcp["mean_prob"]) == len(tcp["class_ids"]) == len(record["classifier_norms"]["norms"])
        assert sum(tcp["rois"]) > 0 and sum(tcp["gt_instances"]) > 0
        assert all(p is None or 0.0 <= p <= 1.0 for p in tcp["mean_prob"])
        assert all((p is None) == (n == 0) for p, n in zip(tcp["mean_prob"], tcp["rois"]))
        assert record["classifier_norms"]["classifier"] == "Linear"
    assert "class_means" not in base
    means = fasa["class_means"]
    assert means["clustering"] == "meanshift" and len(means["groups"]) == len(means["class_ids"]) > 0
    last_groups = fasa["fasa_state"][-1]["groups"]
    assert means["groups"] == [last_groups[c] for c in means["class_ids"]]  # the last adaptation's
    text = write_report(store).read_text()
    assert "fig1b_figs_tiny_cpu-compact--embedded-tiny.png" in text
    assert "fig5_figs_tiny_cpu-compact--embedded-tiny_fasa.png" in text
    frame = true_class_probability_frame({"base": {0: base["true_class_prob"]}})
    assert frame["rois"].sum() == sum(base["true_class_prob"]["rois"])
    assert len(class_embedding_frame(means)) == len(means["class_ids"])
