#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian/Ubuntu machine: Mesa's software adapters (lavapipe for
# Vulkan, llvmpipe for OpenGL through EGL), so that the tests and the benchmark run even without a GPU.
# A machine with a GPU driver keeps it; the software adapters are only added beside it.
# With --web, also what the web example (scripts/web.sh) and its headless-browser test (scripts/web_test.sh)
# need: Chromium and ChromeDriver, the wasm32 target and wasm-bindgen-cli; the test command asks for them, the
# benchmark does not. Whatever is present already is skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
web=0
[ "${1:-}" = "--web" ] && web=1
need=(mesa-vulkan-drivers libegl-mesa0 libegl1 libgl1-mesa-dri)
[ "$web" -eq 1 ] && need+=(chromium chromium-driver)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${need[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (stable) with rustup first" >&2
  exit 1
fi
if [ "$web" -eq 0 ]; then
  exit 0
fi
# The crate must keep compiling for the web (WebGPU): CI checks and lints it for wasm32, and builds the web
# example for it.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "installing the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
# wasm-bindgen's command-line tool must be exactly the version of the wasm-bindgen crate in Cargo.lock, or it
# refuses the module. Building it takes about 9 minutes on 2 cores, once per machine.
wasm_bindgen=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")
if [ -z "$wasm_bindgen" ]; then
  echo "Cargo.lock names no wasm-bindgen version" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wasm_bindgen" ]; then
  echo "installing wasm-bindgen-cli $wasm_bindgen"
  # With its own lock file first; if a version pinned there cannot be had from the registry, the same
  # release with its dependencies resolved afresh.
  cargo install --locked wasm-bindgen-cli --version "$wasm_bindgen" ||
    cargo install wasm-bindgen-cli --version "=$wasm_bindgen"
fi
