"""`fasa data`: make the embedded dataset, check and describe any LVIS/COCO-format dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from fasa_cli.errors import FasaError

app = typer.Typer(help="Make, check and describe datasets.", no_args_is_help=True)


def _console():
    from fasa_cli.commands import wide_console

    return wide_console()  # a problem line unbroken in pipes and logs (rich wraps at 80 there)


def _dataset_jsons(path: Path) -> list[Path]:
    """The annotation JSONs of a JSON file or a dataset folder (annotations/*.json or *.json)."""
    if not path.exists():
        raise FasaError(f"{path} does not exist", "pass a dataset JSON file or a dataset folder")
    if path.is_file():
        return [path]
    folder = path / "annotations" if (path / "annotations").is_dir() else path
    jsons = sorted(folder.glob("*.json"))
    if not jsons:
        raise FasaError(f"no dataset JSON in {folder}", "pass a JSON file or a folder holding annotations/*.json")
    return jsons


def _image_root(folder: Path, json_path: Path, data: dict) -> Path:
    """Where this JSON's image paths resolve: the folder itself (LVIS's coco_url paths, or
    file_names with a split prefix) or the split sub-folder (plain COCO file_names)."""
    from fasa_cli.data.lvis_format import image_relpath

    images = data.get("images") if isinstance(data, dict) else None
    first = image_relpath(images[0]) if images and isinstance(images[0], dict) else ""
    split_dirs = [d for d in sorted(folder.iterdir()) if d.is_dir() and d.name in json_path.stem]
    for candidate in [folder, *split_dirs]:
        if first and (candidate / first).is_file():
            return candidate
    return split_dirs[0] if split_dirs else folder


def _output_folder(folder: Path, option: str) -> Path:
    """Create `folder` for output; a path through (or at) a file is one line, not a traceback."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FasaError(f"{option} {folder} is not a folder (it or a folder above it is a file)",
                        f"pass a folder path to {option}") from None
    return folder


def _missing_val_jsons(jsons: list[Path]) -> list[Path]:
    """The val JSONs a dataset folder lacks: lvis_v1_train.json without lvis_v1_val.json."""
    return [j.with_name(j.name.replace("train", "val")) for j in jsons
            if "train" in j.name and not j.with_name(j.name.replace("train", "val")).exists()]


@app.command("make")
def make(
    preset: str = typer.Option("small", help="tiny (CI), small (the main job) or medium; "
                                             "cifar-lt or cifar-lt-tiny: the classification set"),
    seed: int = typer.Option(0, help="generator seed; the same (preset, seed) gives identical files"),
    root: Path = typer.Option(None, help="dataset folder (default: data/generated/<preset>-seed<seed> in the repo, "
                                          "or $FASA_DATA_DIR/<preset>-seed<seed>)"),
    examples: bool = typer.Option(False, help="also draw examples.png (labelled training images) in the folder"),
) -> None:
    """Generate the embedded long-tailed LVIS-format dataset (or find it if already there)."""
    from fasa_cli.data import class_groups, ensure_embedded, load_lvis_json
    from fasa_cli.data.classification import PRESETS as CLASSIFICATION_PRESETS
    from fasa_cli.data.visualize import render_examples

    if preset in CLASSIFICATION_PRESETS:
        _make_classification(preset, seed, root)
        return
    paths = ensure_embedded(preset=preset, seed=seed, root=root, progress=True)
    groups = class_groups(load_lvis_json(paths.train_json))
    console = _console()
    console.print(f"dataset: {paths.root}")
    console.print(f"  train: {paths.train_json}\n  val:   {paths.val_json}")
    counts = groups["frequency"].value_counts()
    console.print(f"  {len(groups)} classes: {counts.get('r', 0)} rare, {counts.get('c', 0)} common, "
                  f"{counts.get('f', 0)} frequent")
    if examples:
        console.print(f"  examples: {render_examples(paths, 8, paths.root / 'examples.png')}")


@app.command("check")
def check(
    path: Path = typer.Argument(..., help="a LVIS/COCO-format JSON, or a dataset folder (checks images too)"),
    images: Path = typer.Option(None, help="folder the JSON's image paths are relative to (checks the files)"),
    fmt: str = typer.Option("auto", "--format", help="auto, lvis or coco"),
) -> None:
    """Validate dataset JSON(s) and images; print every problem; exit 2 if there are any."""
    from fasa_cli.data.lvis_format import check_loaded, read_json

    console = _console()
    total = 0
    jsons = _dataset_jsons(path)
    if path.is_dir():
        for missing in _missing_val_jsons(jsons):
            total += 1
            console.print(f"[red]{missing}: the val split is missing[/red]")
            console.print("  - a run evaluates on it (fix: put the val JSON next to the train JSON)",
                          markup=False, highlight=False)
    for json_path in jsons:
        data = read_json(json_path)
        image_root = images if images is not None else (_image_root(path, json_path, data) if path.is_dir() else None)
        # Every image is decoded (a truncated file fails here, not mid-training).
        problems = check_loaded(data, json_path, image_root, fmt, images="decode", progress=True)
        total += len(problems)
        where = f" (images under {image_root})" if image_root is not None else ""
        if problems:
            console.print(f"[red]{json_path}{where}: {len(problems)} problem(s)[/red]")
            for line in problems:
                console.print(f"  - {line}", markup=False, highlight=False)
        else:
            n = len(data["images"]), len(data["annotations"]), len(data["categories"])
            console.print(f"[green]ok[/green] {json_path}{where}: {n[0]} images, {n[1]} annotations, {n[2]} categories")
    if total:
        raise FasaError(f"{path}: {total} problem(s) found", "fix the problems listed above")


@app.command("stats")
def stats(
    path: Path = typer.Argument(..., help="a dataset folder (uses its train JSON) or a LVIS/COCO-format JSON"),
    out: Path = typer.Option(None, help="folder for long_tail.png and class_counts.csv (default: next to the data)"),
    all_rows: bool = typer.Option(False, "--all", help="print every class, not just the head and the tail"),
) -> None:
    """Class groups, per-class counts and the long-tail histogram (paper Fig. 1a style)."""
    from rich.table import Table

    from fasa_cli.data.lvis_format import category_problem, class_groups, read_json
    from fasa_cli.data.visualize import GROUP_NAMES, plot_long_tail

    if out is not None and out.exists() and not out.is_dir():
        raise FasaError(f"--out {out} is a file, not a folder", "pass a folder for long_tail.png and class_counts.csv")
    jsons = _dataset_jsons(path)
    train = next((j for j in jsons if "train" in j.name), jsons[0])
    val = next((j for j in jsons if "val" in j.name and j != train), None)

    def counted(json_path: Path):
        data = read_json(json_path)
        if not isinstance(data, dict):
            raise FasaError(f"{json_path} is not a COCO/LVIS-format JSON", f"run `fasa data check {json_path}`")
        problem = category_problem(data)
        if problem:
            raise FasaError(f"{json_path}: {problem}", f"run `fasa data check {json_path}` and repair the file")
        try:
            return class_groups(data)
        except (KeyError, TypeError, ValueError) as err:
            raise FasaError(f"{json_path} has malformed categories or annotations ({err})",
                            f"run `fasa data check {json_path}`") from None

    groups = counted(train)
    if val is not None:
        val_groups = counted(val)
        if val_groups["id"].tolist() != groups["id"].tolist():
            raise FasaError(f"{val} and {train} have different categories", "use the two splits of one dataset")
        groups["val_image_count"] = val_groups["image_count"].to_numpy()

    console = _console()
    summary = Table(title=f"class groups of {train}")
    for col in ("group", "classes", "train images / class", "train instances"):
        summary.add_column(col)
    for letter in "rcf":
        g = groups[groups["frequency"] == letter]
        if len(g):
            summary.add_row(GROUP_NAMES[letter], str(len(g)),
                            f"{g['train_image_count'].min()}-{g['train_image_count'].max()}",
                            str(int(g["train_instance_count"].sum())))
    console.print(summary)

    ordered = groups.sort_values("train_instance_count", ascending=False, kind="stable")
    table = Table(title="classes by training instances")
    columns = ["id", "name", "frequency", "train_image_count", "train_instance_count"]
    columns += ["val_image_count"] if "val_image_count" in ordered else []
    headers = {"frequency": "group", "train_image_count": "images", "train_instance_count": "instances",
               "val_image_count": "val images"}
    for col in columns:
        table.add_column(headers.get(col, col), no_wrap=col == "name")
    rows = ordered if all_rows or len(ordered) <= 40 else None
    if rows is None:
        head, tail = ordered.head(20), ordered.tail(10)
        for _, r in head.iterrows():
            table.add_row(*(str(r[c]) for c in columns))
        table.add_row(*(["..."] * len(columns)))
        rows = tail
    for _, r in rows.iterrows():
        table.add_row(*(str(r[c]) for c in columns))
    console.print(table)

    if out is not None:
        _output_folder(out, "--out")
        png, csv = out / "long_tail.png", out / "class_counts.csv"
    elif path.is_dir():
        png, csv = path / "long_tail.png", path / "class_counts.csv"
    else:
        png, csv = path.with_name(f"{path.stem}_long_tail.png"), path.with_name(f"{path.stem}_class_counts.csv")
    plot_long_tail(groups, png, title=f"{path.resolve().name}: {train.name}" if path.is_dir() else train.name)
    groups.to_csv(csv, index=False)
    console.print(f"wrote {png}\nwrote {csv}")


@app.command("show")
def show(
    path: Path = typer.Argument(..., help="a dataset folder in LVIS layout (annotations/lvis_v1_*.json)"),
    n: int = typer.Option(8, min=1, help="number of images"),
    split: str = typer.Option("train", help="train or val"),
    out: Path = typer.Option(None, help="PNG to write, or a folder for examples_<split>.png "
                                        "(default: <folder>/examples_<split>.png)"),
) -> None:
    """Draw a grid of images with their masks, boxes and class names."""
    from fasa_cli.data.real import lvis_v1_paths
    from fasa_cli.data.visualize import render_examples

    if split not in ("train", "val"):
        raise FasaError(f"unknown split '{split}'", "use train or val")
    if not path.is_dir():
        raise FasaError(f"{path} is not a dataset folder", "pass the folder holding annotations/ (e.g. from `fasa data make`)")
    name = f"examples_{split}.png"
    if out is None:
        png = path / name
    elif out.is_dir() or not out.suffix:  # a folder (maybe still to be made), never `DIR.png`
        png = _output_folder(out, "--out") / name
    elif out.suffix.lower() != ".png" or (out.exists() and not out.is_file()):
        raise FasaError(f"--out {out} is not a .png file", f"name a .png file or a folder (it gets {name})")
    else:
        png = _output_folder(out.parent, "--out's folder") / out.name
    paths = lvis_v1_paths(path, validate=False)  # the embedded data has LVIS v1's layout
    written = render_examples(paths, n, png, split=split)
    _console().print(f"wrote {written}")


def _make_classification(preset: str, seed: int, root: Path | None) -> None:
    """`fasa data make --preset cifar-lt`: the embedded long-tailed classification set."""
    from fasa_cli.data.classification import ensure_cls_embedded, load_cls_folder

    folder = ensure_cls_embedded(preset=preset, seed=seed, root=root, progress=True)
    _print_classification(load_cls_folder(folder, f"embedded-{preset}"))


def _print_classification(data) -> None:
    counts = data.class_counts
    groups = {g: data.frequency.count(g) for g in "rcf"}
    sizes = ", ".join(f"{split} {len(labels)}" for split, (_, labels) in data.splits.items())
    console = _console()
    console.print(f"dataset: {data.root}")
    console.print(f"  images: {sizes}")
    console.print(f"  {len(counts)} classes, {max(counts)} down to {min(counts)} training images per class "
                  f"(ratio {max(counts) / max(min(counts), 1):g}): {groups['r']} few-shot, "
                  f"{groups['c']} medium-shot, {groups['f']} many-shot")


@app.command("cifar")
def cifar(
    path: Path = typer.Argument(..., help="the extracted cifar-100-python folder (train, test, meta) or its parent"),
    ratio: float = typer.Option(100.0, help="imbalance ratio n_max / n_min (the paper's: 100)"),
) -> None:
    """Check the CIFAR-100 pickles and describe the CIFAR-100-LT split a run builds from them
    (LDAM-DRW's protocol; set FASA_CIFAR100_ROOT to the folder for `--dataset cifar100_lt`)."""
    from fasa_cli.data.classification import load_cifar100_lt

    _print_classification(load_cifar100_lt(path, imbalance_ratio=ratio))
