"""MMDetection 3.x glue for FASA: registered modules only, loaded via `custom_imports`.

Nothing inside mmdet is patched. The method itself lives in fasa_cli.core (plain PyTorch).
"""

from fasa_cli.mmdet_ext import datasets, heads, hooks, metric  # noqa: F401  (registration)
