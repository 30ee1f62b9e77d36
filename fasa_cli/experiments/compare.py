"""`fasa compare`: an ad-hoc spec of the baseline against named methods (optionally +FASA).

Each row carries the paper's numbers for that method (and method + FASA) when a paper table
spec (experiments/tableN.yaml, N from the method's registration) has a row running it."""

from __future__ import annotations

from fasa_cli import registry
from fasa_cli.errors import FasaError
from fasa_cli.experiments.spec import ExperimentSpec, load_spec, spec_from_data

# The dataset each profile runs on when no spec says otherwise.
DEFAULT_DATASET = {
    "cpu-compact": "embedded-small",
    "lvis-r50": "lvis_v1",
    "lvis-r101": "lvis_v1",
    "lvis-x101": "lvis_v1",
    "lvis-cascade-r101": "lvis_v1",
    "coco-lt-r50": "coco_lt",
    "cifar-resnet32": "cifar100_lt",
}
WITH_CHOICES = ("fasa",)


def build_compare_spec(
    methods: list[str], with_fasa: bool, profile: str = "cpu-compact", seeds: list[int] | None = None
) -> ExperimentSpec:
    """Baseline + one row per method (+ a `+FASA` row of each, delta to its own row).

    Unknown names list the valid ones; known but unbuilt names raise NotBuiltError, all before
    anything runs."""
    if not methods:
        raise FasaError("no methods to compare", "pass e.g. --baselines rfs")
    for name in methods:
        registry.lookup("method", name, require_built=False)
    for name in methods:
        registry.lookup("method", name)
    registry.lookup("profile", profile)
    methods = [m for m in dict.fromkeys(methods) if m != "baseline"]
    task = "classification" if profile.startswith("cifar") else "detection"
    metrics = ["accuracy"] if task == "classification" else ["AP", "APr", "APc", "APf"]
    paper, sources = _paper_numbers(methods or ["baseline"], metrics)
    rows = [{"name": "baseline", "label": "Baseline", "baseline": True, "set": {"method": "baseline"},
             "paper": paper.get(("baseline", False), {})}]
    if with_fasa:
        rows.append({"name": "baseline_fasa", "label": "Baseline + FASA", "delta_to": "baseline",
                     "set": {"method": "baseline", "fasa": {}}, "paper": paper.get(("baseline", True), {})})
    for method in methods:
        label = registry.METHODS[method].description.split(" (")[0]
        rows.append({"name": method, "label": label, "set": {"method": method},
                     "paper": paper.get((method, False), {})})
        if with_fasa:
            rows.append({"name": f"{method}_fasa", "label": f"{label} + FASA", "delta_to": method,
                         "set": {"method": method, "fasa": {}}, "paper": paper.get((method, True), {})})
    name = "compare--" + "-".join(methods or ["baseline"]) + ("--with-fasa" if with_fasa else "")
    data = {
        "table": "compare",
        "title": "Baseline against " + (", ".join(methods) or "itself") + (" (each with and without FASA)" if with_fasa else ""),
        "paper_setting": "ad-hoc comparison (`fasa compare`), not a paper table",
        "profiles": [profile],
        "dataset": {profile: DEFAULT_DATASET[profile]},
        "base": {"task": task},
        "rows": rows,
        "metrics": metrics,
    }
    if sources:
        data["notes"] = ("Paper numbers from " + "; ".join(sources) + ": the paper's setting, not this "
                         "profile's; the baseline's are those of the first method's table.")
    if seeds:
        data["seeds"] = seeds
    return spec_from_data(data, name=name)


def _paper_numbers(methods: list[str], metrics: list[str]) -> tuple[dict[tuple[str, bool], dict], list[str]]:
    """{(method, with FASA): paper numbers} from the paper tables that run these methods, and
    the tables used. The baseline (and baseline + FASA) come from the first method's table."""
    found: dict[tuple[str, bool], dict] = {}
    sources: list[str] = []
    for method in methods:
        for table in registry.METHODS[method].paper_table.split(","):
            try:
                spec = load_spec(f"table{table.strip()}")
            except FasaError:
                continue  # no such spec (or no experiments/ folder): no paper numbers
            used = False
            for row in spec.rows:
                if row.paper_only or not row.paper:
                    continue
                settings = spec.merged_settings(row.name, spec.default_profile)
                key = (settings.get("method", "baseline"), settings.get("fasa") is not None)
                if key[0] not in (method, "baseline") or (key[0] == "baseline" and method != methods[0]):
                    continue
                if key not in found:
                    found[key] = {m: v for m, v in row.paper.items() if m in metrics}
                    used = True
            source = f"Table {spec.table} ({spec.paper_setting})"
            if used and source not in sources:
                sources.append(source)
            if (method, False) in found:
                break
    return found, sources
