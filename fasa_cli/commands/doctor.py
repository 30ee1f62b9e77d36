"""`fasa doctor`: is this machine ready? Versions, compiled ops, CUDA, datasets."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fasa_cli.errors import FasaError

_PACKAGES = ("torch", "mmcv", "mmengine", "mmdet", "lvis", "faster_coco_eval", "tidecv",
             "pycocotools", "numpy")

_DISTRIBUTIONS = {"faster_coco_eval": "faster-coco-eval"}


def _version(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any import failure is a finding here
        return False, f"not importable: {type(err).__name__}: {err}".splitlines()[0]
    version = getattr(mod, "__version__", None)
    if version is None:  # lvis and pycocotools carry no __version__; their metadata does
        from importlib import metadata

        try:
            version = metadata.version(_DISTRIBUTIONS.get(module, module))
        except metadata.PackageNotFoundError:
            version = "installed"
    return True, version


def check_compiled_ops() -> tuple[bool, str]:
    """Run mmcv's RoIAlign and NMS on CPU tensors: mmcv-lite or a broken build fails here."""
    try:
        import torch
        from mmcv.ops import RoIAlign, nms

        feats = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
        rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [1, 2.0, 2.0, 7.0, 7.0]])
        out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feats, rois)
        boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]],
                             dtype=torch.float32)
        _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
        if tuple(out.shape) != (2, 3, 2, 2) or keep.tolist() != [0, 2]:
            return False, f"wrong results (RoIAlign {tuple(out.shape)}, NMS keep {keep.tolist()})"
        return True, "RoIAlign and NMS run on CPU"
    except Exception as err:  # noqa: BLE001
        return False, f"{type(err).__name__}: {err}".splitlines()[0]


def _datasets() -> list[tuple[str, bool, str]]:
    from fasa_cli.data.embedded import default_root as embedded_root

    found = []
    for preset in ("tiny", "small", "medium"):
        root = embedded_root(preset, 0)
        found.append((f"embedded-{preset}", root.exists(),
                      str(root) if root.exists() else "generated on first use (`fasa data make`)"))
    lvis = Path(os.environ.get("FASA_LVIS_ROOT", "data/lvis_v1"))
    missing = lvis_missing(lvis)
    if not lvis.is_dir():
        where = f"{lvis} not found (set FASA_LVIS_ROOT)"
    else:
        where = f"{lvis}" if not missing else f"{lvis}: no {', '.join(missing)} (set FASA_LVIS_ROOT)"
    found.append(("lvis_v1", not missing, where))
    return found


def lvis_missing(root: Path) -> list[str]:
    """What an LVIS v1 folder lacks for a run: both JSONs and the COCO image folders
    (under root/ or root/coco/, as `lvis_v1_paths` accepts)."""
    missing = [f"annotations/{name}" for name in ("lvis_v1_train.json", "lvis_v1_val.json")
               if not (root / "annotations" / name).is_file()]
    if not any((p / "train2017").is_dir() and (p / "val2017").is_dir() for p in (root, root / "coco")):
        missing.append("train2017/ + val2017/")
    return missing


def doctor() -> None:
    """Check versions, mmcv's compiled ops, CUDA and datasets; exit 2 if something is missing."""
    console = Console()
    table = Table(title="fasa doctor", show_lines=False)
    for col in ("check", "ok", "details"):
        table.add_column(col)
    problems = []
    # Importing torch and mmdet takes tens of seconds: say what is happening meanwhile.
    with Console(stderr=True).status("checking...") as status:
        for name in _PACKAGES:
            status.update(f"importing {name}...")
            ok, info = _version(name)
            table.add_row(name, "yes" if ok else "NO", info)
            if not ok:
                problems.append(name)
        status.update("running mmcv's compiled ops...")
        ok, info = check_compiled_ops()
        table.add_row("mmcv compiled ops", "yes" if ok else "NO", info)
        if not ok:
            problems.append("mmcv compiled ops")
        status.update("checking CUDA...")
        try:
            import torch

            cuda = torch.cuda.is_available()
            device = torch.cuda.get_device_name(0) if cuda else "CPU only (fine for the embedded data)"
        except Exception as err:  # noqa: BLE001 - torch's own row already says why
            cuda, device = False, f"unknown ({type(err).__name__})"
        table.add_row("CUDA", "yes" if cuda else "no", device)
        status.update("looking for datasets...")
        for name, present, where in _datasets():
            table.add_row(f"dataset {name}", "yes" if present else "no", where)
    console.print(table)
    if problems:
        raise FasaError(f"missing or broken: {', '.join(problems)}",
                        "run `bash scripts/setup_env.sh` (or `make setup`) to build the environment")
    typer.echo("ready")
