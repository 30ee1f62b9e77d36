"""TIDE error analysis (Bolya et al., ECCV 2020) through tidecv 1.0.1, as in the paper's Table 8.

The six main error types, each the AP50 gain (in AP points, %) from fixing that error:
E_cls (right box, wrong class), E_loc (right class, 0.1 <= IoU < 0.5), E_both (wrong
class and poor box), E_dupe (duplicate of a matched detection), E_bkg (IoU < 0.1 with
every object), E_miss (objects no detection could recover).

TIDE is not federated: every annotation is ground truth and every detection counts,
including detections of classes an LVIS image never verified (which lvis-api would
skip). Crowd annotations (COCO `iscrowd`) become TIDE ignore regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pycocotools import mask as mask_utils

from fasa_cli.errors import FasaError
from fasa_cli.evaluation.compat import import_tidecv
from fasa_cli.evaluation.io import GroundTruth, check_iou_type, load_ground_truth, prepare_detections

# tidecv's short error names -> the suite's metric names (registry: E_cls ... E_miss).
TIDE_ERROR_NAMES = {"Cls": "E_cls", "Loc": "E_loc", "Both": "E_both", "Dupe": "E_dupe", "Bkg": "E_bkg", "Miss": "E_miss"}


def _annotation_rle(segmentation: object, height: int, width: int) -> dict:
    """A ground-truth segmentation (polygons, uncompressed or compressed RLE) as compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def _check_ground_truth(gt: dict, use_masks: bool) -> None:
    """The annotation fields TIDE reads, checked up front: one line naming the first bad one."""
    images = {image.get("id"): image for image in gt["images"] if isinstance(image, dict)}
    categories = {c.get("id") for c in gt["categories"] if isinstance(c, dict)}
    fix = "repair the annotation file (`fasa data check` lists every problem)"
    for ann in gt["annotations"]:
        if not isinstance(ann, dict):
            raise FasaError(f"a ground-truth annotation is a {type(ann).__name__}, not an object", fix)
        aid = ann.get("id")
        image = images.get(ann.get("image_id"))
        if image is None:
            raise FasaError(f"ground-truth annotation {aid} refers to unknown image {ann.get('image_id')!r}", fix)
        if ann.get("category_id") not in categories:
            raise FasaError(f"ground-truth annotation {aid} refers to unknown category {ann.get('category_id')!r}", fix)
        box = ann.get("bbox")
        if not (isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
            raise FasaError(f"ground-truth annotation {aid} has no bbox of 4 finite numbers ({box!r})", fix)
        if use_masks:
            if ann.get("segmentation") is None:
                raise FasaError(f"ground-truth annotation {aid} has no segmentation", f"{fix}, or use --iou-type bbox")
            if not all(isinstance(image.get(k), int) and image[k] > 0 for k in ("height", "width")):
                raise FasaError(f"ground-truth image {image.get('id')} has no positive height/width", fix)


def _ground_truth_data(tidecv, gt: dict, use_masks: bool, max_dets: int):
    data = tidecv.Data("ground truth", max_dets=max_dets)
    images = {image["id"]: image for image in gt["images"]}
    for image in gt["images"]:
        data.add_image(image["id"], image.get("file_name") or image.get("coco_url") or str(image["id"]))
    for category in gt["categories"]:
        data.add_class(category["id"], category.get("name", str(category["id"])))
    for ann in gt["annotations"]:
        image = images.get(ann["image_id"])
        if image is None:
            raise FasaError(f"ground truth annotation {ann.get('id')} refers to unknown image {ann['image_id']}", "repair the annotation file")
        mask = _annotation_rle(ann["segmentation"], image["height"], image["width"]) if use_masks else None
        if ann.get("iscrowd", 0):
            data.add_ignore_region(ann["image_id"], ann["category_id"], ann["bbox"], mask)
        else:
            data.add_ground_truth(ann["image_id"], ann["category_id"], ann["bbox"], mask)
    return data


def _detection_data(tidecv, dets: list[dict], use_masks: bool, max_dets: int):
    data = tidecv.Data("detections", max_dets=max_dets)
    for det in dets:
        mask = det["segmentation"] if use_masks else None
        data.add_detection(det["image_id"], det["category_id"], det["score"], det.get("bbox"), mask)
    return data


def tide_errors(
    gt: GroundTruth,
    detections: Sequence[dict],
    iou_type: str = "bbox",
    *,
    max_dets: int = 300,
    pos_threshold: float = 0.5,
    background_threshold: float = 0.1,
) -> dict[str, float]:
    """The six TIDE main errors {E_cls, E_loc, E_both, E_dupe, E_bkg, E_miss} as dAP in %.

    An error is NaN in the one case its gain is undefined: fixing it leaves tidecv no
    class to average over (every object missed and every detection ignored).

    `gt`: COCO- or LVIS-format annotations (path or dict), all of which are used;
    `detections`: the results list; `max_dets`: per image (LVIS protocol 300).
    """
    check_iou_type(iou_type)
    gt = load_ground_truth(gt, lvis=False)
    dets = prepare_detections(detections, gt, iou_type)
    if not gt["annotations"]:
        # tidecv divides by the number of classes with ground truth or detections.
        raise FasaError("the ground truth has no annotations, so TIDE has nothing to measure errors against", "pass the annotated split")

    use_masks = iou_type == "segm"
    _check_ground_truth(gt, use_masks)
    tidecv = import_tidecv()
    mode = tidecv.TIDE.MASK if use_masks else tidecv.TIDE.BOX
    gt_data = _ground_truth_data(tidecv, gt, use_masks, max_dets)
    det_data = _detection_data(tidecv, dets, use_masks, max_dets)

    try:
        # What TIDE.evaluate runs; the TIDE object itself is skipped because it sets up
        # seaborn plotting, which error analysis does not need.
        run = tidecv.TIDERun(gt_data, det_data, pos_threshold, background_threshold, mode, max_dets, True)
    except ZeroDivisionError:  # tidecv found no class with ground truth or counted detections
        raise FasaError("TIDE found nothing to evaluate (only crowd/ignored ground truth and detections)", "pass annotated images") from None
    # tidecv's non-progressive fix_main_errors, one error type at a time so that a
    # degenerate type cannot take the others down with it.
    errors = {}
    for error_type in tidecv.TIDE._error_types:
        try:
            fixed_ap = run.fix_errors(lambda error, t=error_type: isinstance(error, t)).get_mAP()
        except ZeroDivisionError:
            # tidecv averages AP over the classes left with data after the fix. Fixing can
            # leave none (every object missed and no detection counted): the gain is undefined.
            errors[TIDE_ERROR_NAMES[error_type.short_name]] = float("nan")
            continue
        # As tidecv does: a negative change is a binning artefact, not a gain.
        errors[TIDE_ERROR_NAMES[error_type.short_name]] = max(fixed_ap - run.ap, 0.0)
    return errors
