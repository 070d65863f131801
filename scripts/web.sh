#!/usr/bin/env bash
# Builds the web example (crates/wgoptim-web) into target/web/site and serves it on http://127.0.0.1:PORT
# (8000 unless PORT is set), a secure context, so a desktop browser with WebGPU can open it.
#   scripts/web.sh          build, then serve until interrupted
#   scripts/web.sh build    build only
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli at the wasm-bindgen version of Cargo.lock;
# scripts/setup.sh --web installs both.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
site=target/web/site
cargo build -p wgoptim-web --target wasm32-unknown-unknown --release --locked
rm -rf "$site"
mkdir -p "$site"
wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" \
  "$target_dir/wasm32-unknown-unknown/release/wgoptim_web.wasm"
cp crates/wgoptim-web/www/index.html "$site/"
echo "built $site"
if [ "${1:-}" = build ]; then
  exit 0
fi
port="${PORT:-8000}"
echo "open http://127.0.0.1:$port/ in a browser with WebGPU (Ctrl-C stops the server)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory "$site"
