#!/usr/bin/env bash
# Builds .venv/ with the pinned stack; safe to re-run (a finished env leaves a stamp).
# mmcv 2.1.0 has no registry wheel with compiled ops, so it is built once from the sdist
# and the wheel is cached outside the repo, keyed by mmcv, torch, CUDA and Python version.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.fasa-setup-done
TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
CACHE=${FASA_CACHE:-$HOME/.cache/fasa}

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt "$0" ]; then
  exit 0
fi

log() { printf '[setup] %s\n' "$*" >&2; }
# pip warns once per package about local index folders it cannot use; that is noise.
pip_install() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
constraints=$VENV/constraints.txt
# torch stays pinned for every later install: a resolver must never swap in a CUDA build.
echo "torch==$TORCH_VERSION" > "$constraints"

log "torch $TORCH_VERSION and build tools"
pip_install "torch==$TORCH_VERSION" "numpy>=1.26" "setuptools<81" wheel packaging ninja

# mm* and lvis/tidecv go in with --no-deps: their metadata asks for opencv-python (the GUI
# build) and, through mmengine, nothing else we lack; torchvision is deliberately absent.
log "runtime dependencies"
pip_install addict yapf termcolor rich opencv-python-headless pillow matplotlib scipy \
  shapely six terminaltables tqdm pycocotools "faster-coco-eval==1.8.0" typer pandas pyyaml \
  "pydantic>=2" scikit-learn cycler kiwisolver pyparsing python-dateutil pytest pytest-xdist hypothesis \
  seaborn appdirs scikit-image "submitit>=1.5"  # tidecv imports seaborn and appdirs at import time; submitit: cluster sweeps
# instaboostfast (mmdet's InstaBoost transform, Table 2) also asks for opencv-python; its other
# needs (numpy, scipy, scikit-image, pycocotools, matplotlib, pillow) are installed above.
pip_install --no-deps "mmengine==0.10.7" "mmdet==3.3.0" "lvis==0.5.3" "tidecv==1.0.1" \
  "instaboostfast==0.1.2"
pip_install --no-deps -e .

pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
cuda=$("$VENV/bin/python" -c 'import torch; v = torch.version.cuda; print("cu" + v.replace(".", "") if v else "cpu")')
wheel_dir="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$cuda-$pyver"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION with compiled ops, once per machine (about 15 minutes on 2 cores)"
  build=$(mktemp -d)
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --no-binary=:all: \
    -d "$build" "mmcv==$MMCV_VERSION" 2> >(grep -v "is ignored" >&2)
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$VENV/bin/python" -m pip wheel -q \
    --disable-pip-version-check --no-deps --no-build-isolation -w "$build/out" \
    "$build"/mmcv-*.tar.gz 2> >(grep -v "is ignored" >&2)
  mkdir -p "$wheel_dir"
  mv "$build"/out/mmcv-*.whl "$wheel_dir/"
  rm -rf "$build"
fi
log "mmcv from $wheel_dir"
pip_install --no-deps "$wheel_dir"/mmcv-*.whl
touch "$STAMP"
log "ready: $VENV"
