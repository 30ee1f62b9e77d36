"""The classification path (Table 7; Tables 10 and 11 on CIFAR-100-LT): registered mmengine
modules and hooks for an image classifier that hosts FASA on its pooled feature, on the same
engine as the detection glue (fasa_cli/mmdet_ext). Loaded through `custom_imports`.

The method math lives in fasa_cli/core (FASA) and fasa_cli/methods (LDAM-DRW, TDE, M2m, Chu's
plug-in); this package only hosts it.
"""

from fasa_cli.cls_ext import data, hooks, metric, model  # noqa: F401  (registration)
