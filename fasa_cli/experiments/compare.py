"""`fasa compare`: an ad-hoc spec of the baseline against named methods (optionally +FASA)."""

from __future__ import annotations

from fasa_cli import registry
from fasa_cli.errors import FasaError
from fasa_cli.experiments.spec import ExperimentSpec, spec_from_data

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
    rows = [{"name": "baseline", "label": "Baseline", "baseline": True, "set": {"method": "baseline"}}]
    if with_fasa:
        rows.append({"name": "baseline_fasa", "label": "Baseline + FASA", "delta_to": "baseline",
                     "set": {"method": "baseline", "fasa": {}}})
    for method in methods:
        label = registry.METHODS[method].description.split(" (")[0]
        rows.append({"name": method, "label": label, "set": {"method": method}})
        if with_fasa:
            rows.append({"name": f"{method}_fasa", "label": f"{label} + FASA", "delta_to": method,
                         "set": {"method": method, "fasa": {}}})
    name = "compare--" + "-".join(methods or ["baseline"]) + ("--with-fasa" if with_fasa else "")
    data = {
        "table": "compare",
        "title": "Baseline against " + (", ".join(methods) or "itself") + (" (each with and without FASA)" if with_fasa else ""),
        "paper_setting": "ad-hoc comparison (`fasa compare`), not a paper table",
        "profiles": [profile],
        "dataset": {profile: DEFAULT_DATASET[profile]},
        "base": {"task": task},
        "rows": rows,
        "metrics": ["accuracy"] if task == "classification" else ["AP", "APr", "APc", "APf"],
    }
    if seeds:
        data["seeds"] = seeds
    return spec_from_data(data, name=name)
