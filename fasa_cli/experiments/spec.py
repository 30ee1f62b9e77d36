"""Experiment specs: one YAML file per paper table, validated on load.

A spec (experiments/<name>.yaml) holds
  table, title, caption, paper_setting   what it reproduces, as printed in the paper
  profiles      model/schedule profiles it may run under; the first is the default
  dataset       {profile: dataset}; every profile needs one
  profile_overrides  optional {profile: overrides} (e.g. the paper's RFS on lvis-r50 only)
  base          a partial RunConfig shared by all rows (no profile/dataset: those come
                from the profile)
  rows          name, label, set (overrides deep-merged onto base; `method` with its
                `method_args`, checked by the method's schema), paper (the paper's
                numbers), paper_std, baseline: true (deltas are measured against it),
                delta_to (a row to measure this row's delta against instead),
                paper_only (a row only the paper ran: shown, never run), note
  seeds         default [0, 1, 2]
  metrics       columns (registry METRICS names); metrics_by_profile overrides per profile
  notes         free text shown with the table
Unknown keys and unknown names are errors pointing at `file:line`. Unbuilt methods,
profiles, datasets or metrics load fine (so every paper table can be written down);
running them raises NotBuiltError.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fasa_cli import registry
from fasa_cli.errors import FasaError, NotBuiltError
from fasa_cli.runconfig import RunConfig
from fasa_cli.experiments.yaml_lines import LineDict, line_of, load_yaml_with_lines, plain
from fasa_cli.paths import repo_root

SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"  # also a folder name in the result store
_FROM_PROFILE = ("profile", "dataset")  # set by the profile, never by base/set


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SAFE_NAME)
    label: str
    set: dict[str, Any] = {}
    paper: dict[str, float] = {}
    paper_std: dict[str, float] = {}
    baseline: bool = False
    delta_to: str | None = None
    paper_only: bool = False
    note: str | None = None


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(pattern=SAFE_NAME)
    source: str | None = None  # the YAML file it came from (None for ad-hoc specs)
    table: str
    title: str
    caption: str = ""
    paper_setting: str
    profiles: list[str] = Field(min_length=1)
    dataset: dict[str, str]
    profile_overrides: dict[str, dict[str, Any]] = {}
    base: dict[str, Any] = {}
    rows: list[Row] = Field(min_length=1)
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    metrics: list[str] = Field(min_length=1)
    metrics_by_profile: dict[str, list[str]] = {}
    notes: str | None = None

    # -- lookups ---------------------------------------------------------------------------
    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise FasaError(
            f"spec '{self.name}' has no row '{name}'", f"use one of: {', '.join(r.name for r in self.rows)}"
        )

    @property
    def default_profile(self) -> str:
        return self.profiles[0]

    def check_profile(self, profile: str | None) -> str:
        profile = profile or self.default_profile
        if profile not in self.profiles:
            registry.lookup("profile", profile, require_built=False)  # unknown name: list them all
            raise FasaError(
                f"spec '{self.name}' does not run under profile '{profile}'", f"use one of: {', '.join(self.profiles)}"
            )
        return profile

    def metrics_for(self, profile: str) -> list[str]:
        return list(self.metrics_by_profile.get(profile, self.metrics))

    def baseline_row(self) -> Row | None:
        return next((r for r in self.rows if r.baseline), None)

    def reference_row(self, row: Row) -> Row | None:
        """The row whose mean `row`'s delta is measured against (None: no delta)."""
        ref = self.row(row.delta_to) if row.delta_to else self.baseline_row()
        return None if ref is None or ref.name == row.name else ref

    def runnable_rows(self) -> list[Row]:
        return [r for r in self.rows if not r.paper_only]

    # -- resolution ------------------------------------------------------------------------
    def merged_settings(self, row_name: str, profile: str, dataset: str | None = None) -> dict[str, Any]:
        row = self.row(row_name)
        merged = deep_merge(deep_merge(plain(self.base), plain(self.profile_overrides.get(profile, {}))), plain(row.set))
        merged["profile"] = profile
        merged["dataset"] = dataset or self.dataset[profile]
        return merged

    def resolve(self, row_name: str, profile: str | None = None, dataset: str | None = None) -> RunConfig:
        """The RunConfig one row runs with under `profile` (default: the spec's first)."""
        profile = self.check_profile(profile)
        row = self.row(row_name)
        if row.paper_only:
            raise FasaError(f"row '{row_name}' of spec '{self.name}' is paper-only", "it has no run; pick another row")
        if dataset is not None:
            registry.lookup("dataset", dataset, require_built=False)
        try:
            return RunConfig.model_validate(self.merged_settings(row_name, profile, dataset))
        except ValidationError as err:
            first = _first_error(err)
            problem, fix = _describe_pydantic_error(first, RunConfig)
            where = _dotted(("rows", row_name, "set", *_error_loc(first)))
            raise FasaError(f"spec '{self.name}' {where}: {problem}", fix) from None

    def require_built(self, rows: list[str], profile: str, dataset: str | None = None) -> None:
        """NotBuiltError naming the first row that uses something unbuilt, before any run starts."""
        for metric in self.metrics_for(profile):
            _require_built_or_explain("metric", metric, f"a column of spec '{self.name}'")
        for name in rows:
            config = self.resolve(name, profile, dataset)
            for kind, value in (("profile", config.profile), ("dataset", config.dataset), ("method", config.method)):
                _require_built_or_explain(kind, value, f"row '{name}' of spec '{self.name}'")


def _require_built_or_explain(kind: str, name: str, user: str) -> None:
    try:
        registry.lookup(kind, name)
    except NotBuiltError as err:
        err.problem = f"{err.problem} (used by {user})"
        if kind == "method":
            err.fix = "run only the built rows with --rows, or wait until it is built"
        err.args = (err.line(),)
        raise


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """`override` onto `base`, recursing into mappings; None replaces (e.g. `fasa: null`)."""
    merged = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- loading ----------------------------------------------------------------------------------


def specs_dir() -> Path:
    root = repo_root()
    if root is None:
        raise FasaError("cannot find the experiments/ folder (no repository above the package)", "pass a spec path")
    return root / "experiments"


def available_specs() -> list[str]:
    folder = specs_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_spec(name_or_path: str | Path) -> ExperimentSpec:
    """A spec by bare name (`table1` -> experiments/table1.yaml) or by path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise FasaError(f"spec file {path} does not exist", "check the path")
    else:
        path = specs_dir() / f"{text}.yaml"
        if not path.is_file():
            names = available_specs()
            raise FasaError(f"unknown spec '{text}'", f"use one of: {', '.join(names) or '(none found)'}")
    try:
        raw = load_yaml_with_lines(path)
    except UnicodeDecodeError as err:
        from fasa_cli.errors import unicode_error

        raise unicode_error(err, f"spec {path}") from None
    return spec_from_data(raw, name=path.stem, source=path)


def spec_from_data(raw: Any, name: str, source: Path | None = None) -> ExperimentSpec:
    """Validate a spec mapping; errors name the file and line (when it came from a file)."""
    origin = str(source) if source is not None else f"spec '{name}'"

    def fail(loc: tuple, problem: str, fix: str) -> typing.NoReturn:
        line = line_of(raw, loc) if isinstance(raw, LineDict) else None
        where = f"{origin}:{line}" if line else origin
        location = f" {_dotted(loc)}:" if loc else ""
        raise FasaError(f"{where}:{location} {problem}", fix)

    if not isinstance(raw, dict):
        fail((), "a spec must be a YAML mapping (table, title, rows, ...)", "start from an existing spec")
    for key in ("name", "source"):
        if key in raw:
            fail((key,), f"'{key}' is not a spec key (it comes from the file)", f"remove '{key}'")
    try:
        spec = ExperimentSpec.model_validate({**plain(raw), "name": name, "source": str(source) if source else None})
    except ValidationError as err:
        first = _first_error(err)
        problem, fix = _describe_pydantic_error(first, ExperimentSpec)
        loc = tuple(first["loc"])
        fail(loc[:-1] if first["type"] == "missing" else loc, problem, fix)
    for loc, problem, fix in _semantic_problems(spec):
        fail(loc, problem, fix)
    return spec


def _semantic_problems(spec: ExperimentSpec) -> typing.Iterator[tuple[tuple, str, str]]:
    """Names and cross-references pydantic's types cannot check, with their locations."""
    for kind, names, loc in (("profile", spec.profiles, "profiles"), ("metric", spec.metrics, "metrics")):
        seen: set[str] = set()
        for i, name in enumerate(names):
            yield from _unknown_name(kind, name, (loc, i))
            if name in seen:
                yield (loc, i), f"{kind} '{name}' is listed twice", "list it once"
            seen.add(name)
    for profile in spec.profiles:
        if profile not in spec.dataset:
            yield ("dataset",), f"profile '{profile}' has no dataset", f"add '{profile}: <dataset>' under dataset"
    for profile, dataset in spec.dataset.items():
        if profile not in spec.profiles:
            yield ("dataset", profile), f"'{profile}' is not one of the spec's profiles", "add it to profiles or remove it"
        yield from _unknown_name("dataset", dataset, ("dataset", profile))
    for field in ("profile_overrides", "metrics_by_profile"):
        for profile in getattr(spec, field):
            if profile not in spec.profiles:
                yield (field, profile), f"'{profile}' is not one of the spec's profiles", "add it to profiles or remove it"
    for profile, names in spec.metrics_by_profile.items():
        for i, name in enumerate(names):
            yield from _unknown_name("metric", name, ("metrics_by_profile", profile, i))
    for key in _FROM_PROFILE:
        if key in spec.base:
            yield ("base", key), f"'{key}' cannot be set in base", "it comes from the profile (see `dataset:`)"
        for profile, overrides in spec.profile_overrides.items():
            if key in overrides:
                yield ("profile_overrides", profile, key), f"'{key}' cannot be overridden", "use `dataset:`"
    if len(set(spec.seeds)) != len(spec.seeds) or min(spec.seeds) < 0:
        yield ("seeds",), "seeds must be distinct non-negative integers", "e.g. seeds: [0, 1, 2]"

    columns = set(spec.metrics).union(*spec.metrics_by_profile.values())
    row_names = [r.name for r in spec.rows]
    if sum(r.baseline for r in spec.rows) > 1:
        yield ("rows",), "more than one row has baseline: true", "mark one baseline row"
    for i, row in enumerate(spec.rows):
        here = ("rows", i)
        if row_names.count(row.name) > 1:
            yield (*here, "name"), f"row name '{row.name}' is used twice", "give each row its own name"
        if row.delta_to is not None and (row.delta_to not in row_names or row.delta_to == row.name):
            yield (*here, "delta_to"), f"delta_to '{row.delta_to}' is not another row", f"use one of: {', '.join(row_names)}"
        for metric in row.paper:
            yield from _unknown_name("metric", metric, (*here, "paper", metric))
            if metric in registry.METRICS and metric not in columns:
                yield (*here, "paper", metric), f"paper number for '{metric}' has no column", "add the metric to metrics"
        for metric in row.paper_std:
            if metric not in row.paper:
                yield (*here, "paper_std", metric), f"paper_std '{metric}' has no paper value", "add it under paper"
        if row.paper_only:
            if row.set or row.baseline:
                yield here, f"paper-only row '{row.name}' cannot have set or baseline", "remove them"
            continue
        for key in _FROM_PROFILE:
            if key in row.set:
                yield (*here, "set", key), f"'{key}' cannot be set by a row", "it comes from the profile"
        for profile in spec.profiles:
            yield from _resolution_problem(spec, i, profile)


def _resolution_problem(spec: ExperimentSpec, index: int, profile: str) -> typing.Iterator[tuple[tuple, str, str]]:
    row = spec.rows[index]
    try:
        RunConfig.model_validate(spec.merged_settings(row.name, profile))
    except ValidationError as err:
        first = _first_error(err)
        inner = _error_loc(first)
        problem, fix = _describe_pydantic_error(first, RunConfig)
        # Point at the layer that set the bad value: the row, then the profile's overrides, then base.
        candidates = [
            (("rows", index, "set"), row.set),
            (("profile_overrides", profile), spec.profile_overrides.get(profile, {})),
            (("base",), spec.base),
        ]
        for prefix, layer in candidates:
            if inner and inner[0] in layer:
                yield (*prefix, *inner), f"{problem} (profile {profile})", fix
                return
        yield ("rows", index), f"{_dotted(inner)}: {problem} (profile {profile})", fix


def _unknown_name(kind: str, name: str, loc: tuple) -> typing.Iterator[tuple[tuple, str, str]]:
    try:
        registry.lookup(kind, name, require_built=False)
    except FasaError as err:
        yield loc, err.problem, err.fix or ""


def _error_loc(error: dict) -> tuple:
    """The error's location; a bad `method_args` entry points at its own key."""
    loc = tuple(error["loc"])
    key = (error.get("ctx") or {}).get("key")
    return (*loc, key) if error["type"] == "method_args" and key else loc


def _first_error(err: ValidationError) -> dict:
    # An unknown key usually explains a "missing" one (a typo), so report it first.
    errors = err.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _describe_pydantic_error(error: dict, model: type[BaseModel]) -> tuple[str, str]:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        if model is ExperimentSpec and len(loc) == 1:
            allowed = [k for k in allowed if k not in ("name", "source")]  # set from the file, not in it
        fix = f"use one of: {', '.join(allowed)}" if allowed else "remove it"
        return f"unknown key '{loc[-1]}'", fix
    if kind == "missing":
        return f"missing required key '{loc[-1]}'", f"add '{loc[-1]}'"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "method_args":  # RunConfig's check against the method's own schema
        problem, _, fix = message.partition("; use one of: ")
        return problem.split(": ", 1)[-1], f"use one of: {fix}" if fix else "fix the value (see the method's module docstring)"
    if "; use one of: " in message:  # raised by RunConfig's registry-name validators
        problem, names = message.split("; use one of: ", 1)
        return problem, f"use one of: {names}"
    fixes = {"bool_parsing": "use true or false", "literal_error": "use one of the values it lists"}
    return message, fixes.get(kind, "fix the value")


def _allowed_keys(model: Any, loc: tuple) -> list[str]:
    """Field names of the pydantic model reached by walking `loc` from `model`."""
    current = model
    for part in loc:
        current = _unwrap_optional(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return []
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap_optional(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_csv(text: str | None, option: str | None = None) -> list[str]:
    """'a, b' -> ['a', 'b']; None -> []. With `option` (e.g. '--rows'), an empty value or
    an empty item ('a,,b') is an error naming the option instead of being dropped."""
    if text is None:
        return []
    items = [t.strip() for t in text.split(",")]
    if option is None:
        return [t for t in items if t]
    if not any(items):
        raise FasaError(f"{option} is empty", f"list comma-separated values, or leave out {option}")
    if not all(items):
        raise FasaError(f"{option} '{text}' has an empty item", "separate values by single commas, e.g. a,b")
    return items


def parse_seeds(text: str | None) -> list[int] | None:
    """'0,1,2' -> [0, 1, 2]; None -> None (the spec's seeds). '' or an empty item is an error."""
    if text is None:
        return None
    seeds = []
    for part in parse_csv(text, "--seeds"):
        if not re.fullmatch(r"\d+", part):
            raise FasaError(f"--seeds '{text}' is not a comma-separated list of non-negative integers",
                            "e.g. --seeds 0,1,2")
        seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise FasaError(f"--seeds '{text}' repeats a seed", "list each seed once")
    return seeds
