#!/usr/bin/env bash
# Creates (or reuses) .venv with everything edgeinf builds, tests and runs with on an x86-64 host.
# torch comes first, pinned to the build this host needs (CUDA build of torch 2.14.1: the one
# PyPI's torchvision 0.29.1 and timm import with), so no extra can pull another torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q torch==2.14.1 torchvision==0.29.1 timm 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q -e '.[build,dev]' 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, torchvision, timm, onnx, onnxruntime, mlxtend, edgeinf; print('edgeinf', edgeinf.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
