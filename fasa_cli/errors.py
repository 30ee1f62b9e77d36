"""User-facing errors: one line naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import errno as errno_mod
import os

EXIT_USER_ERROR = 2


class FasaError(Exception):
    """Bad input or an unmet precondition the user can fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.problem}. Fix: {self.fix}" if self.fix else f"{self.problem}."


def _built_names(kind: str) -> list[str] | None:
    from fasa_cli import registry  # lazy: the registry imports this module

    table = getattr(registry, "_KINDS", {}).get(kind)
    return None if table is None else [e.name for e in table.values() if e.built]


class NotBuiltError(FasaError):
    """A capability the suite names but does not implement yet; it must not pretend to work."""

    def __init__(self, what: str, kind: str | None = None):
        # `what` starts with the registry kind ("method 'smote' ...") when it names one.
        kind = kind or what.split(" ", 1)[0]
        built = _built_names(kind)
        listing = f"built {kind}s: {', '.join(built)}; " if built else ""
        super().__init__(f"{what} is not built yet",
                         f"use a built one ({listing}the README's status table lists what is built)"
                         if built else "the README's status table lists what is built")


class RunFailedError(Exception):
    """A training or evaluation run crashed; the message names its log. Exit code 1."""


# -- errors from the environment, turned into one line by cli.main -----------------------------

_ERRNO_FIXES = {
    errno_mod.EACCES: "make it writable/readable for this user or pick another location",
    errno_mod.EPERM: "make it writable/readable for this user or pick another location",
    errno_mod.EROFS: "the filesystem is read-only: pick a folder on a writable disk",
    errno_mod.ENOSPC: "free disk space there or pick a folder on another disk",
    errno_mod.EDQUOT: "free space within your disk quota or pick a folder on another disk",
    errno_mod.ENOTDIR: "a part of that path is a file, not a folder: pick another path",
    errno_mod.EISDIR: "that path is a folder: name a file instead",
    errno_mod.ENOENT: "check that the path exists",
    errno_mod.EEXIST: "a file is in the way of a folder: pick another path",
    errno_mod.ENAMETOOLONG: "use a shorter path",
}
_WRITE_HINT = " (results: --results-dir or FASA_RESULTS_DIR; data: --root or FASA_DATA_DIR)"


def os_error(err: OSError) -> FasaError:
    """`path: reason (ENAME)` plus a fix for the errno, for an OSError nobody caught."""
    name = errno_mod.errorcode.get(err.errno, "") if err.errno is not None else ""
    reason = err.strerror or (os.strerror(err.errno) if err.errno else str(err) or type(err).__name__)
    where = err.filename if err.filename is not None else None
    if err.errno == errno_mod.EEXIST and where is not None and not os.path.isdir(where):
        reason = "exists and is not a folder"  # mkdir(exist_ok=True) on a file, e.g. /dev/null
    if err.filename2 is not None:
        where = f"{err.filename} -> {err.filename2}"
    problem = f"{where}: {reason}" if where is not None else reason
    if name:
        problem += f" ({name})"
    fix = _ERRNO_FIXES.get(err.errno, "check the path and its permissions")
    if err.errno in (errno_mod.EACCES, errno_mod.EPERM, errno_mod.EROFS, errno_mod.ENOSPC,
                     errno_mod.EDQUOT, errno_mod.ENOTDIR, errno_mod.EEXIST):
        fix += _WRITE_HINT
    return FasaError(problem, fix)


def validation_problem(err) -> str:
    """A pydantic ValidationError as `field a.b[0]: message` (its first error), without
    pydantic's "For further information" line."""
    errors = err.errors()
    if not errors:
        return str(err).splitlines()[0]
    first = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = ""
    for part in first.get("loc", ()):
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    kind = first.get("type", "")
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "missing required key"
    elif kind == "json_invalid":
        return f"not valid JSON ({first.get('ctx', {}).get('error', message)})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field '{loc}': {message}{more}" if loc else f"{message}{more}"


def validation_error(err, source: str, fix: str) -> FasaError:
    return FasaError(f"{source}: {validation_problem(err)}", fix)


def unicode_error(err: UnicodeDecodeError, source: str | None = None) -> FasaError:
    where = f"{source} is" if source else "a file is"
    return FasaError(f"{where} not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})",
                     "save it as UTF-8" if source else "pass UTF-8 text files (specs, JSON)")
