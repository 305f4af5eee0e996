#!/usr/bin/env bash
# Installs edgeinf with its build and test dependencies into .venv, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
. .venv/bin/activate
python -m pytest -q "$@"
