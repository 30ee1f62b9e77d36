"""MMDetection 3.x glue for FASA: registered modules only, loaded via `custom_imports`.

Nothing inside mmdet is patched. The method itself lives in fasa_cli.core (plain PyTorch).
"""

from fasa_cli.mmdet_ext import datasets, heads, hooks, metric  # noqa: F401  (registration)
from fasa_cli.mmdet_ext import roi_align  # noqa: F401,E402  (FASARoIExtractor, BatchedRoIAlign)
from fasa_cli.mmdet_ext import method_hooks, transforms  # noqa: F401,E402  (MethodEpochHook, GuardedInstaBoost)
from fasa_cli.mmdet_ext import cascade, extra_metrics, simcal  # noqa: F401,E402  (StagedCascadeRoIHead; AP-fixed/pool, COCO-LT metrics; SimCal)
from fasa_cli.mmdet_ext import mask_head  # noqa: F401,E402  (BatchedPasteMaskHead)
from fasa_cli.mmdet_ext import cls_losses, nms_resampling, stages  # noqa: F401,E402  (EQL v1, group softmax, Seesaw; NMS re-sampling; FrozenStageHook)
