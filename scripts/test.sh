#!/usr/bin/env bash
# Fresh machine -> test results: installs glancemap and runs every test. Integration tests find the
# shared ImageNet sample through GLANCEMAP_SAMPLE_DIR or ../shared/data/imagenet-sample and skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -ra "$@"
