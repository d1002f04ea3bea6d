#!/usr/bin/env bash
# Every method on the quick start (digits, 40% symmetric noise, small CNN, 60 epochs), seeds 0-2, then the
# mean ± std over seeds of the raw and EMA test accuracy. Finished runs are kept, so a rerun resumes.
#   OUT=runs/methods JOBS=2 SLN=.venv/bin/sln scripts/methods_comparison.sh
set -euo pipefail
export OUT=${OUT:-runs/methods} SLN=${SLN:-sln}
VARIANTS="ce sln gce sce nce-rce ls bootstrap-soft bootstrap-hard forward elr coteaching ce+sam sln+sam"
for seed in 0 1 2; do for variant in $VARIANTS; do echo "$variant $seed"; done; done |
  xargs -P "${JOBS:-1}" -L 1 bash -c '
    method=${0%+sam}; sam=; [[ $0 == *+sam ]] && sam=--sam
    run="$OUT/${0/+/-}-s$1"
    [ -f "$run/final.pt" ] || $SLN train --preset quickstart --method "$method" $sam --seed "$1" --out "$run" \
      --overwrite --quiet > /dev/null'
$SLN evaluate "$OUT"/*-s[0-9] --json --out "$OUT/evaluation" --overwrite > "$OUT/evaluate.json"
python3 "$(dirname "$0")/methods_table.py" "$OUT/evaluate.json"
