#!/usr/bin/env bash
# The web example's test: lints its browser-only code for wasm32, builds the page (scripts/web.sh build), then
# runs it in headless Chromium on WebGPU (SwiftShader when there is no GPU) and checks what it reports
# (scripts/web_test.py). Artifacts: target/web/screenshot.png and target/web/result.json.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
# The page's glue exists only for wasm32, so the host's clippy never sees it. --no-deps: the library's own
# wasm32 lints are a step of their own.
cargo clippy -p wgoptim-web --target wasm32-unknown-unknown --locked --no-deps -- -D warnings
scripts/web.sh build
built=$SECONDS
python3 scripts/web_test.py "$@"
echo "web test: $((built - start)) s to lint and build, $((SECONDS - built)) s in the browser"
