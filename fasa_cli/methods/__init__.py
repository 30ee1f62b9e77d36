"""Long-tail methods as plug-ins: one module per method, registered where it is implemented.

A method module (e.g. `smote.py`) declares, with `@register_method`, its name, paper table,
its hyper-parameters (a pydantic schema whose defaults are the paper's values) and what it
changes in a run: an `edit` of the mmdet config (training set or sampler, training pipeline,
box head / classifier / loss, hooks, a second training stage) and/or a `feature` plug-in, a
plain-PyTorch module that the RoI box head hosts next to FASA (see `feature.py`). Nothing here
imports mmdet: the config is a plain dict and the host head lives in fasa_cli/mmdet_ext/heads.py.

Every module of this package is imported on first use, so adding a method is adding a module:
"built" is derived from what registers (fasa_cli/registry.py stays the catalogue of names).
"""

from __future__ import annotations

import importlib
import pkgutil

from fasa_cli.methods.api import (  # noqa: F401  (the registration API)
    Method,
    MethodArgs,
    NoArgs,
    RunEdit,
    apply_method,
    register_method,
)
from fasa_cli.methods.api import _REGISTERED

_INFRASTRUCTURE = {"api", "feature", "cls_api"}  # cls_api: the classification run view
_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def registered_methods() -> dict[str, Method]:
    """name -> Method for every method a module of this package registers."""
    _discover()
    return dict(_REGISTERED)


def get_method(name: str) -> Method:
    methods = registered_methods()
    if name not in methods:
        from fasa_cli.registry import lookup

        lookup("method", name)  # an unknown or unbuilt name gets the registry's message
    return methods[name]


def validate_method_args(name: str, args: dict) -> dict:
    """`args` checked by the method's schema and normalised (only the keys given that differ
    from the defaults); a bad key
    or value raises ValueError('key: problem')."""
    methods = registered_methods()
    if name not in methods:
        first = next(iter(args))
        raise ValueError(f"{first}: method '{name}' is not built, so it takes no method_args yet")
    return methods[name].validate_args(args)
