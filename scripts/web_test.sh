#!/usr/bin/env bash
# The web example's test: builds the page (scripts/web.sh build), then runs it in headless Chromium on WebGPU
# (SwiftShader when there is no GPU) and checks what it reports (scripts/web_test.py). Artifacts:
# target/web/screenshot.png and target/web/result.json. The page's Rust is linted by the workspace's clippy
# on the host, where it compiles too.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
scripts/web.sh build
built=$SECONDS
python3 scripts/web_test.py "$@"
echo "web test: $((built - start)) s to build, $((SECONDS - built)) s in the browser"
