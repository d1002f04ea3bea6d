#!/usr/bin/env bash
# Build the documentation site, serve it on 127.0.0.1 for at most a minute, and screenshot three pages with headless
# Chromium (Debian: apt-get install chromium). Output: site-screenshots/{home,cli,results}.png, 1280x800.
# Usage: scripts/site-screenshots.sh [OUT_DIR]    (PYTHON=..., CHROMIUM=... to choose the programs)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-site-screenshots}
PYTHON=${PYTHON:-python3}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "error: no chromium found; install it (apt-get install chromium) or set CHROMIUM" >&2; exit 1; }
SITE=$(mktemp -d)
PROFILE=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 "$PYTHON" -m mkdocs build --strict --quiet --site-dir "$SITE"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# bounded lifetime: the server stops after 60 s even if this script is killed before its trap runs
timeout 60 "$PYTHON" -m http.server "$PORT" --bind 127.0.0.1 --directory "$SITE" > /dev/null 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2> /dev/null || true; rm -rf "$SITE" "$PROFILE"' EXIT
for _ in $(seq 50); do "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/')" \
  2> /dev/null && break; sleep 0.1; done
mkdir -p "$OUT"
for page in home: cli:reference/cli/ results:results/; do
  name=${page%%:*}
  timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$PROFILE" --window-size=1280,800 --screenshot="$OUT/$name.png" \
    "http://127.0.0.1:$PORT/${page#*:}" > /dev/null 2>&1
  echo "$OUT/$name.png"
done
