#!/usr/bin/env bash
# Regenerates every table in docs/results.md from the shipped explainers (about 7 h on a 2-core CPU, where
# Score-CAM, Ablation-CAM, RISE and Opti-CAM take most of it; DEVICE=cuda runs everything on a GPU; set GLANCEMAP_SAMPLE_DIR
# if the ImageNet sample is not at ../shared/data/imagenet-sample). The "P-TAME (previous)" and
# "P-TAME (per-class)" rows of docs/results.md are earlier default heads (git history, commits 8908426 and
# faaaa1f, src/glancemap/weights/default): add them with --also previous=DIR --also per-class=DIR after
# checking those heads out into two folders.
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLE=${GLANCEMAP_SAMPLE_DIR:-../shared/data/imagenet-sample}
bash scripts/setup.sh
GLANCEMAP=.venv/bin/glancemap
DEVICE=${DEVICE:-auto}
.venv/bin/python experiments/sample_split.py "$SAMPLE" --out splits

# The selective explainer shown as a plain min-max of its logits (its shipped display set back to the plain one),
# and both shipped Lite2 explainers without their class gate only
$GLANCEMAP ship selective --out runs/selective-plain --negative-slope 1.0 --no-gate
$GLANCEMAP ship selective --out runs/selective-ungated --no-gate
$GLANCEMAP ship default --out runs/default-ungated --no-gate

# Lite2: every method; costly ones on the first images only (stated in the table's n column)
$GLANCEMAP evaluate --data splits/dev.txt --explainer default --out runs/eval-efficientnet_lite2 --deletion-steps 6 \
  --methods ptame,ptame-single,gradcam,gradcam++,scorecam,ablationcam,layercam,eigencam,rise,opticam,auxcam,gaussian,random \
  --limit-for opticam=100 --limit-for layercam=50 --limit-for eigencam=50 --limit-for random=50 \
  --limit-for scorecam=196 --limit-for ablationcam=100 --limit-for rise=16 --device "$DEVICE" \
  --also selective=selective --also selective-plain=runs/selective-plain \
  --also selective-ungated=runs/selective-ungated --also default-ungated=runs/default-ungated

# Lite1 with the same Lite0 auxiliary (its own trained head, shipped as efficientnet_lite1)
$GLANCEMAP evaluate --data splits/dev.txt --explainer efficientnet_lite1 --out runs/eval-efficientnet_lite1 \
  --deletion-steps 6 --methods ptame,ptame-single,gradcam,gradcam++,auxcam,gaussian --limit 100 --device "$DEVICE"

# Cascading randomisation of the Lite2 backbone
$GLANCEMAP sanity --data splits/dev.txt --train-data splits/train.txt --explainer default --out runs/sanity \
  --methods ptame,gradcam,gradcam++,auxcam --images 16 --max-stages 4 --ptame-steps 60 --device "$DEVICE"

# Localization: the grid pointing game on 2x2 grids of the dev images
$GLANCEMAP evaluate --data splits/dev.txt --grid 2 --out runs/eval-efficientnet_lite2 \
  --methods ptame,ptame-single,gradcam,gradcam++,layercam,auxcam,scorecam,rise,gaussian \
  --limit-for scorecam=8 --limit-for rise=2 --device "$DEVICE" \
  --also selective=selective --also selective-plain=runs/selective-plain \
  --also selective-ungated=runs/selective-ungated --also default-ungated=runs/default-ungated

# The shipped head's untrained start, and displays of both (results.md, "What training buys over its start"
# onward): the start, the displays scored on dev and train grids, and the gated maps paired on the dev grids
[ -f runs/in_start/explainer/config.json ] || $GLANCEMAP train splits/train.txt --out runs/in_start --head shared \
  --lr 3e-4 --destroy 3 --epochs 48 --batch-size 32 --train-aux-sides 224 320 --extra-aux-sizes 320 --max-steps 0 \
  --holdout 0 --no-progress --device "$DEVICE"
.venv/bin/python experiments/map_display.py splits/dev.txt --explainers default,runs/in_start/explainer \
  --displays p1,p2,p4,l0.05,r0.2,r0.05,g0.05,g0.01
.venv/bin/python experiments/map_display.py splits/train.txt --explainers default,runs/in_start/explainer \
  --faithfulness-limit 200 --no-road --displays p1,r0.05,r0.02,r0.01,r0.001
for pair in default-g:src/glancemap/weights/default start-g:runs/in_start/explainer; do
  name=${pair%%:*} source=${pair#*:}
  mkdir -p "runs/$name" && cp "$source/head.safetensors" "runs/$name/"
  .venv/bin/python -c "import json, sys; c = json.load(open(sys.argv[1])); c['negative_slope'] = 0.05; \
json.dump(c, open(sys.argv[2], 'w'), indent=1)" "$source/config.json" "runs/$name/config.json"
  $GLANCEMAP evaluate --data splits/dev.txt --grid 2 --explainer "runs/$name" --out "runs/grid-$name" \
    --methods ptame,gradcam,auxcam --device "$DEVICE"
done

# ONNX: agreement with PyTorch, and cost beside the backbone in ONNX Runtime
.venv/bin/python experiments/onnx_agreement.py splits/dev.txt --float64
.venv/bin/python scripts/benchmark.py --onnx --one-pass-sides 192 160
# cheaper one-pass maps against the shipped two passes, paired (the benchmark above gives their cost)
.venv/bin/python experiments/map_variants.py splits/dev.txt --variants m320,s224,s192,s160 \
  --paired-with runs/eval-efficientnet_lite2 --against gradcam,auxcam

# Your own label set: restricted_imagenet9 (trains its explainers first; about 1.5 h on the CPU)
DEVICE="$DEVICE" bash experiments/restricted_imagenet9.sh
.venv/bin/python experiments/map_display.py splits/dev.txt --explainers runs/rin9/start/explainer --displays p1,g0.05

# Training against a black box: Lite2 as an ONNX file, gradient-free (about 1.5 h of training on the CPU)
.venv/bin/python experiments/blackbox_lite2.py --train splits/train.txt --dev splits/dev.txt --out runs/blackbox \
  --methods ptame,auxcam,gaussian,rise --limit-for rise=16
