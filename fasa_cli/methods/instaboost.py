"""InstaBoost (Fang et al., ICCV 2019): probability-map-guided copy-paste of instances.

mmdet 3.3's `InstaBoost` transform (it imports `instaboostfast`, which scripts/setup_env.sh
installs), with its default hyper-parameters, as the FASA paper does ("we use its default
hyper-parameters", Appendix). It works on raw annotations, so it sits between
LoadImageFromFile and LoadAnnotations, in the training pipeline only (inside the repeat-factor
wrapper when there is one; the validation-loss pass and the test pipeline are untouched).
The transform is fasa_cli.mmdet_ext.transforms.GuardedInstaBoost, mmdet's class with two
instaboostfast 0.1.2 bugs worked around: compressed-RLE masks are uncompressed first, and an
image whose multi-part mask makes instaboostfast fail on numpy 2 passes unaugmented. Choice: `aug_ratio` 0.5 and `hflag` False are
mmdet's defaults (the authors' best COCO config
uses the heat map, hflag True, at about 3x the cost per image)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fasa_cli.methods.api import MethodArgs, register_method


class InstaBoostArgs(MethodArgs):
    action_candidate: tuple[Literal["normal", "horizontal", "vertical", "skip"], ...] = ("normal", "horizontal", "skip")
    action_prob: tuple[float, ...] = (1.0, 0.0, 0.0)
    scale: tuple[float, float] = (0.8, 1.2)
    dx: float = Field(15, gt=0)
    dy: float = Field(15, gt=0)
    theta: tuple[float, float] = (-1.0, 1.0)
    color_prob: float = Field(0.5, ge=0.0, le=1.0)
    hflag: bool = False
    aug_ratio: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_probability_per_action(self):
        if len(self.action_prob) != len(self.action_candidate) or abs(sum(self.action_prob) - 1.0) > 1e-9:
            raise ValueError("action_prob needs one probability per action_candidate, summing to 1")
        return self


@register_method("instaboost", table="2", summary="InstaBoost copy-paste augmentation (Fang et al., ICCV'19)",
                 args=InstaBoostArgs, changes=("training pipeline",))
def instaboost(edit, args: InstaBoostArgs) -> None:
    # mmdet's InstaBoost, guarded against two instaboostfast bugs (see GuardedInstaBoost).
    transform = dict(type="GuardedInstaBoost", **{k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in args.model_dump().items()})
    edit.insert_train_transform(transform, before="LoadAnnotations")
