#!/usr/bin/env bash
# The first GPU contact, as one command: doctor, the gpu-marked tests, the speed benchmark, concurrent runs per
# device, and epochs/s of every CIFAR preset, summarised in one JSON file (default gpu-check.json).
#
#   scripts/gpu-check.sh                      # on a CUDA machine: under 9 minutes on one H100
#   scripts/gpu-check.sh --device cpu --quick # the script's own test, on any machine (tests/test_gpu_check.py)
#   scripts/gpu-check.sh --out FILE --budget SECONDS
#
# Every step runs with its own time limit; a failing step is recorded (exit code, last error line) and the
# others still run. The exit code is 1 when any step failed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
