"""MMDetection 3.x glue for FASA: registered modules only, loaded via `custom_imports`.

Nothing inside mmdet is patched. The method itself lives in fasa_cli.core (plain PyTorch).
"""

from fasa_cli.mmdet_ext import datasets, heads, hooks, metric  # noqa: F401  (registration)
from fasa_cli.mmdet_ext import roi_align  # noqa: F401,E402  (FASARoIExtractor, BatchedRoIAlign)
from fasa_cli.mmdet_ext import method_hooks, transforms  # noqa: F401,E402  (MethodEpochHook, GuardedInstaBoost)
