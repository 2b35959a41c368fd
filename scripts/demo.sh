#!/usr/bin/env bash
# Fresh machine -> overlays: installs glancemap, explains scikit-image's sample photos with the shipped explainer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/glancemap demo --out "${1:-demo}"
