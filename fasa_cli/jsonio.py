"""Strict JSON out: NaN and infinities become null (json.dumps would write bare NaN, which
is not JSON), and files are replaced atomically so a crash never leaves half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return _clean(obj.item())  # numpy / torch scalars
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return _clean(obj.tolist())  # numpy arrays
    return obj


def dumps_json(obj: Any, *, indent: int | None = 2, sort_keys: bool = True) -> str:
    """JSON text of `obj` with every non-finite float written as null."""
    return json.dumps(_clean(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """Write `dumps_json(obj)` to `path` atomically: a temp file in the same folder, then os.replace."""
    path = Path(path)
    text = dumps_json(obj, indent=indent, sort_keys=sort_keys) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a results file is shared like any other
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
