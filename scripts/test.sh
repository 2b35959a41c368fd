#!/usr/bin/env bash
# Fresh machine -> test results: installs glancemap, lints, then runs every test, fast ones first.
# Integration tests find the shared ImageNet sample through GLANCEMAP_SAMPLE_DIR or
# ../shared/data/imagenet-sample and skip without it. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
stage() {  # pytest exits 5 when a selection holds no test: not a failure here
  .venv/bin/python -m pytest -ra --durations=10 "$@" || { rc=$?; [ "$rc" -eq 5 ] || exit "$rc"; }
}
echo "== unit tests (random-init models, no data)"
stage -m "not slow and not integration" "$@"
echo "== slow and integration tests (real offline weights, the shared ImageNet sample)"
stage -m "slow or integration" "$@"
