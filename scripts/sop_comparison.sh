#!/usr/bin/env bash
# SOP, SOP with SLN's noise (the quick start's sigma 0.5), SOP+, CE and SLN on the quick start (digits, 40%
# symmetric noise, small CNN, 60 epochs), seeds 0-2; then mean ± std over seeds of the raw and EMA test accuracy.
# Finished runs are kept, so a rerun resumes.   OUT=runs/sop JOBS=1 SLN=sln scripts/sop_comparison.sh
set -euo pipefail
export OUT=${OUT:-runs/sop} SLN=${SLN:-sln}
VARIANTS="ce sln sop sop+sln sop-plus"
for seed in ${SEEDS:-0 1 2}; do for variant in $VARIANTS; do echo "$variant $seed"; done; done |
  xargs -P "${JOBS:-1}" -L 1 bash -c '
    case $0 in ce) args="--method ce";; sln) args="--method sln";; sop) args="--method sop";;
      sop+sln) args="--method sop --sigma 0.5";; sop-plus) args="--method sop-plus";; esac
    run="$OUT/${0/+/-}-s$1"
    [ -f "$run/final.pt" ] || $SLN train --preset quickstart $args --seed "$1" --out "$run" --overwrite --quiet \
      > /dev/null'
$SLN evaluate "$OUT"/*-s[0-9] --json --out "$OUT/evaluation" --overwrite > "$OUT/evaluate.json"
python3 "$(dirname "$0")/methods_table.py" "$OUT/evaluate.json"
