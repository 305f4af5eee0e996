#!/usr/bin/env bash
# Installs edgeinf into .venv, then runs the demo end to end into ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
. .venv/bin/activate
edgeinf demo --out "${1:-demo-out}"
