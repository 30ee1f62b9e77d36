"""Compatibility shims for the evaluation libraries, applied only around their calls.

- lvis-api 0.5.3 calls `np.float` in `LVISEval.accumulate`; numpy 2 removed that alias.
  `numpy_removed_aliases()` puts the builtin back (what the alias always meant) for the
  duration of an lvis call and deletes it afterwards, so no other code sees it.
- tidecv 1.0.1 imports seaborn (plotting) and appdirs (dataset downloads) at import time,
  though error analysis needs neither; `import_tidecv()` lends placeholder modules for
  the import when they are not installed.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from fasa_cli.errors import FasaError

# Aliases numpy 1.24 deprecated and numpy 2 removed; lvis-api needs `float` only, the
# others are listed so a future lvis code path cannot fail the same way.
_REMOVED_NUMPY_ALIASES = {"float": builtins.float, "int": builtins.int, "bool": builtins.bool}


@contextmanager
def numpy_removed_aliases() -> Iterator[None]:
    """Temporarily restore `np.float` / `np.int` / `np.bool`-style aliases numpy 2 removed."""
    added = [name for name in _REMOVED_NUMPY_ALIASES if name not in np.__dict__]
    for name in added:
        setattr(np, name, _REMOVED_NUMPY_ALIASES[name])
    try:
        yield
    finally:
        for name in added:
            delattr(np, name)


def _placeholder_module(name: str, **attributes: object) -> types.ModuleType:
    """A module that imports fine but fails clearly if anything is used from it."""
    module = types.ModuleType(name)

    def _missing(attr: str) -> object:
        if attr.startswith("__"):  # the import machinery probes dunders; let it see none
            raise AttributeError(attr)
        raise FasaError(
            f"tidecv needs the '{name}' package for '{attr}' (plots, downloads), which is not installed",
            f"pip install {name} into the project environment",
        )

    module.__getattr__ = _missing  # type: ignore[method-assign]
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def import_tidecv() -> types.ModuleType:
    """`import tidecv`, lending placeholders for its unused plotting/download dependencies."""
    if "tidecv" in sys.modules:
        return sys.modules["tidecv"]

    def _no_downloads(*_args: object, **_kwargs: object) -> str:
        raise FasaError("tidecv tried to download annotations", "pass ground truth explicitly")

    lent = {}
    for name, attributes in (("seaborn", {}), ("appdirs", {"user_data_dir": _no_downloads})):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            lent[name] = _placeholder_module(name, **attributes)
    sys.modules.update(lent)
    try:
        return importlib.import_module("tidecv")
    finally:
        # tidecv keeps its own references; other code must still see the packages as absent.
        for name in lent:
            sys.modules.pop(name, None)
