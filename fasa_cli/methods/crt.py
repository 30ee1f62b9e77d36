"""Classifier re-training, cRT (Kang et al., ICLR 2020), as FASA's Table 4 runs it for Mask
R-CNN: 12+12 epochs. Stage 1 is the baseline (softmax CE, uniform image sampling) trained end
to end; stage 2 starts from stage 1's last checkpoint with fc_cls removed (so it is
re-initialised, eqlv2's `ckpt_surgery --method remove`) and re-trains only fc_cls with repeat
factor sampling (FASA Sec. 4.2: "re-trains the classifier with repeat factor sampling"; eqlv2
uses class-aware sampling instead). Everything else is frozen: no gradient, and the frozen
batch-norm layers keep their statistics (fasa_cli.mmdet_ext.stages.FrozenStageHook).

Both stages live in one run folder: stage 1 in `<run>/stage1/`, stage 2 in the run folder
itself; either resumes from its own checkpoints (fasa_cli.backend.stages). Each stage gets
half the run's epochs (`first_epochs` to change stage 1's) and the run's learning-rate
schedule scaled to its length (LVIS: steps 16, 22 of 24 -> 8, 11 of 12, eqlv2's 1x).

With FASA: FASA runs in stage 2 (stage 1 is the plain baseline); with a frozen feature
extractor its statistics are stationary and the virtual features train fc_cls only. The paper
does not say in which stage FASA ran.
"""

from __future__ import annotations

from pydantic import Field

from fasa_cli.methods.api import register_method
from fasa_cli.methods.rfs import RFSSampling, wrap_with_rfs

CLASSIFIER = "roi_head.bbox_head.fc_cls"


class CRTArgs(RFSSampling):
    first_epochs: int | None = Field(None, ge=1)   # stage 1 length; default half the run's epochs


@register_method("crt", table="4", summary="Classifier re-training, 12+12 schedule (Kang et al., 2020)",
                 args=CRTArgs,
                 changes=("two stages: stage 1 the baseline, stage 2 only a re-initialised fc_cls trains",
                          "stage 2 training set: RFS"))
def crt(edit, args: CRTArgs) -> None:
    edit.two_stage(args.first_epochs, reinit=(CLASSIFIER,), trainable=(CLASSIFIER,))
    wrap_with_rfs(edit, args)
