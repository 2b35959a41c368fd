#!/usr/bin/env bash
# The "your own label set" benchmark of docs/results.md: restricted_imagenet9 (EfficientNet-Lite2, logits
# pooled into 9 superclasses) explained with Lite0 features, whose ImageNet classifier does not have those
# classes. Trains the default recipe (no tuning flags), its untrained start and the paper's recipe at the
# same step budget on the 161 train-split images of the 9 superclasses, then scores them with the
# backbone's CAM baselines on the 42 dev-split images of those classes and on all 200 dev images (the
# backbone's own top-1 is the target whatever a photo shows), and plays the grid pointing game.
# About 1.5 h on a 2-core CPU; DEVICE=cuda for a GPU. Set GLANCEMAP_SAMPLE_DIR if the ImageNet sample is
# not at ../shared/data/imagenet-sample.
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLE=${GLANCEMAP_SAMPLE_DIR:-../shared/data/imagenet-sample}
GLANCEMAP=${GLANCEMAP:-.venv/bin/glancemap}
DEVICE=${DEVICE:-auto}
OUT=${OUT:-runs/rin9}
.venv/bin/python experiments/sample_split.py "$SAMPLE" --out splits

train() {  # name, flags...
  local name=$1; shift
  [ -f "$OUT/$name/explainer/config.json" ] && return 0
  $GLANCEMAP train splits/rin9_train.txt --backbone restricted_imagenet9 --out "$OUT/$name" \
    --no-progress --device "$DEVICE" --resume "$@"
}
train default                                     # the default command: only data, backbone and out
train trained --holdout 0                         # the same without the held-out check: always the trained head
train start --max-steps 0                         # the untrained start: the distilled readout's CAM
train paper --init paper --head per-class --destroy 0 --lr 1e-4 --train-aux-sides --extra-aux-sizes  # the paper's recipe, same budget

ALSO=(--also "trained=$OUT/trained/explainer" --also "start=$OUT/start/explainer" --also "paper=$OUT/paper/explainer")
$GLANCEMAP evaluate --data splits/rin9_dev.txt --explainer "$OUT/default/explainer" "${ALSO[@]}" \
  --out "$OUT/eval-rin9-dev" --deletion-steps 0 --device "$DEVICE" \
  --methods ptame,gradcam,gradcam++,layercam,scorecam,gaussian --limit-for scorecam=10
$GLANCEMAP evaluate --data splits/dev.txt --explainer "$OUT/default/explainer" "${ALSO[@]}" \
  --out "$OUT/eval-dev" --deletion-steps 0 --device "$DEVICE" \
  --methods ptame,gradcam,gradcam++,layercam,gaussian
$GLANCEMAP evaluate --data splits/dev.txt --grid 2 --explainer "$OUT/default/explainer" "${ALSO[@]}" \
  --out "$OUT/eval-dev" --device "$DEVICE" --methods ptame,gradcam,gradcam++,layercam,gaussian
