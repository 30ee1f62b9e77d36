"""SimCal (Wang et al., "The Devil is in Classification: A Simple Framework for Long-tail
Instance Segmentation", ECCV 2020), Table 6's calibration baseline (METHODS.md, Part 2 C).

Two stages in one run folder (fasa_cli.backend.stages):
  stage 1    the plain detector (the baseline: softmax CE, uniform sampling) for the run's whole
             schedule (COCO-LT: 12 epochs), in <run>/stage1;
  stage 2    calibration, `calib_epochs` more: the detector frozen (only the calibration branch
             `roi_head.bbox_head.cal_*` trains; batch-norm statistics kept), the training images
             drawn class-balanced (mmdet's ClassAwareSampler: a class uniformly, then an image
             holding it), the calibration head (copies of the box head's two FCs and fc_cls,
             SimCal's best "3fc_ft"; `head: 3fc_rand` starts them random) trained with softmax
             CE on the positive RoIs plus as many background RoIs (`bg_ratio`), at
             `lr_factor` times the run's learning rate (SimCal: 0.01 after the detector's 0.02).
Inference (dual head): each head's softmax; classes of the `tail_groups` (COCO-LT: the AP1
and AP2 bins, i.e. fewer than 400 training instances, SimCal's threshold; LVIS: rare and
common, fewer than 100 images) take the calibrated head's score, the others and background
keep the original head's (fasa_cli.mmdet_ext.simcal).

Deviation (documented, not in SimCal's code): SimCal keeps only the proposals of the class it
sampled for an image; the sampled class is not passed along mmdet's sampler, so every
positive RoI of the class-balanced images is kept. Not combined with FASA (the paper compares
them as alternatives).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fasa_cli.errors import FasaError
from fasa_cli.methods.api import MethodArgs, register_method

CALIBRATION = "roi_head.bbox_head.cal_"


class SimCalArgs(MethodArgs):
    calib_epochs: int = Field(1, ge=1)                     # stage 2 length, after the detector's schedule
    head: Literal["3fc_ft", "3fc_rand"] = "3fc_ft"
    bg_ratio: float = Field(1.0, ge=0.0)                   # background RoIs per positive in stage 2
    lr_factor: float = Field(0.5, gt=0.0)                  # stage 2 lr / the run's lr
    tail_groups: tuple[Literal["r", "c", "f"], ...] = ("r", "c")


@register_method("simcal", table="6", summary="SimCal calibration with dual-head inference (Wang et al., 2020)",
                 args=SimCalArgs,
                 changes=("two stages: stage 1 the baseline detector, stage 2 only a calibration head trains "
                          "on class-balanced images",
                          "test scores: the calibrated head's for tail classes (dual-head inference)"))
def simcal(edit, args: SimCalArgs) -> None:
    if edit.run.fasa is not None:
        raise FasaError("method 'simcal' is not combined with FASA (Table 6 compares them)",
                        "drop the row's fasa block, or use method baseline with FASA")
    head = edit.bbox_head
    if edit.cfg["model"]["type"] != "MaskRCNN":  # SimCal's dual head is defined for one box head
        raise FasaError(f"method 'simcal' is built for Mask R-CNN, not {edit.cfg['model']['type']}",
                        "run it on a Mask R-CNN profile (coco-lt-r50, cpu-compact-coco-lt)")
    if head["type"] != "Shared2FCBBoxHead":
        raise FasaError(f"method 'simcal' needs the plain 2-FC box head, not {head['type']}",
                        "drop the method that changed the box head")
    tail = [k for k, group in enumerate(edit.frequency) if group in args.tail_groups]
    num_classes = head["num_classes"]
    head.update(type="SimCalBBoxHead", tail_classes=tail, bg_ratio=args.bg_ratio,
                loss_cls=dict(type="SimCalDualLoss", num_classes=num_classes, tail_classes=tail,
                              loss_weight=head["loss_cls"].get("loss_weight", 1.0)))
    # The detector keeps its whole schedule as stage 1; calibration comes on top of it.
    detector_epochs = edit.cfg["train_cfg"]["max_epochs"]
    edit.cfg["train_cfg"]["max_epochs"] = detector_epochs + args.calib_epochs
    edit.two_stage(detector_epochs, reinit=(), trainable=(CALIBRATION,))
    edit.cfg["optim_wrapper"]["optimizer"]["lr"] *= args.lr_factor
    # A head trained from the detector's own weights needs no warm-up.
    edit.cfg["param_scheduler"] = [s for s in edit.cfg["param_scheduler"] if s["type"] != "LinearLR"]
    edit.cfg["train_dataloader"]["sampler"] = dict(type="ClassAwareSampler", seed=edit.seed, num_sample_class=1)
    edit.add_hook(dict(type="SimCalInitHook", init="ft" if args.head == "3fc_ft" else "rand"))
