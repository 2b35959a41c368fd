#!/usr/bin/env bash
# Trains several explainer heads side by side on one GPU (each a background `glancemap train`), as in the
# sweep of docs/experiments.md. Each line of VARIANTS is "NAME train-options..."; '#' lines are skipped.
#   bash experiments/sweep.sh DATA OUT EPOCHS VARIANTS      e.g. bash experiments/sweep.sh splits/train.txt runs/sweep 48 experiments/sweep_lite2.txt
# Then compare the heads on the same images:  glancemap evaluate ... --also NAME=OUT/NAME/explainer
set -euo pipefail
DATA=$1 OUT=$2 EPOCHS=$3 VARIANTS=$4
GLANCEMAP=${GLANCEMAP:-glancemap}
mkdir -p "$OUT"
pids=()
while read -r name opts; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  # shellcheck disable=SC2086  # the options are meant to split
  $GLANCEMAP train "$DATA" --out "$OUT/$name" --epochs "$EPOCHS" --batch-size 32 --workers 2 --no-progress \
    --checkpoint-every 100 $opts > "$OUT/$name.log" 2>&1 &
  pids+=($!)
  echo "started $name: $opts"
done < "$VARIANTS"
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 1 "$OUT"/*.log
exit $status
