"""What decides a run's numbers besides its config and seed: library versions, the machine's
CPU (instruction set, thread count), deterministic-mode flags and the exact data.

Written by the run's own process (where torch is imported) to provenance.json and copied
into the committed record, so `fasa verify` can tell an exact re-run from a different one.
"""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# CPU features that change which kernels torch and oneDNN pick (and so the low bits).
_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd", "sve")
THREADS_ENV = "FASA_NUM_THREADS"


def configure_determinism() -> int:
    """Fix the thread count (FASA_NUM_THREADS, else the cores this process may use) and
    ask torch for deterministic algorithms; returns the thread count."""
    import torch

    threads = int(os.environ.get(THREADS_ENV) or len(os.sched_getaffinity(0)))
    torch.set_num_threads(max(1, threads))
    # warn_only: ops without a deterministic kernel (some CUDA ones) warn instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.get_num_threads()


def cpu_description() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "machine": platform.machine(), "flags": sorted(f for f in _CPU_FLAGS if f in flags)}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collect(data, threads: int) -> dict[str, Any]:
    """The run's provenance (`data` is the run's DatasetInfo)."""
    import torch

    from fasa_cli.data.embedded import GENERATOR_VERSION

    cuda = torch.cuda.is_available()
    return {
        "versions": {name: _version(name) for name in ("torch", "mmcv", "mmengine", "mmdet", "numpy", "lvis", "faster-coco-eval")},
        "cpu": {**cpu_description(), "torch_capability": torch.backends.cpu.get_cpu_capability()},
        "threads": threads,
        "deterministic": {"algorithms": torch.are_deterministic_algorithms_enabled(),
                          "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)},
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "data": {
            "name": data.name,
            "generator_version": GENERATOR_VERSION if data.name.startswith("embedded-") else None,
            "train_sha256": file_sha256(data.root / data.train_ann),
            "val_sha256": file_sha256(data.root / data.val_ann),
        },
    }


def same_machine_type(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Why two provenances may not give bit-identical numbers ([] = they should)."""
    reasons = []
    for name in sorted(set(a.get("versions", {})) | set(b.get("versions", {}))):
        va, vb = a.get("versions", {}).get(name), b.get("versions", {}).get(name)
        if va != vb:
            reasons.append(f"{name} {va} vs {vb}")
    for field in ("model", "torch_capability", "flags"):
        va, vb = a.get("cpu", {}).get(field), b.get("cpu", {}).get(field)
        if va != vb:
            reasons.append(f"CPU {field} {va} vs {vb}")
    for field in ("threads", "gpu", "deterministic"):
        if a.get(field) != b.get(field):
            reasons.append(f"{field} {a.get(field)} vs {b.get(field)}")
    if a.get("data") != b.get("data"):
        reasons.append("different data files")
    return reasons
