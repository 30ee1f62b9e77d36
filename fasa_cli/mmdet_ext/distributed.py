"""Data-parallel glue: a DDP wrapper that also serves CPU (gloo) ranks.

mmengine's Runner passes device_ids=[LOCAL_RANK] to every DistributedDataParallel subclass;
torch refuses device_ids for a CPU module, so this wrapper keeps them only on a GPU.
Registered in mmengine's root registry: the Runner looks the type up there (without the
default scope), and mmdet's child registry finds it through its parent.
"""

from __future__ import annotations

from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class FASADistributedDataParallel(MMDistributedDataParallel):
    def __init__(self, module, device_ids=None, **kwargs):
        on_gpu = any(p.is_cuda for p in module.parameters())
        super().__init__(module=module, device_ids=device_ids if on_gpu else None, **kwargs)
