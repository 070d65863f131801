#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian/Ubuntu machine: Mesa's software adapters (lavapipe for
# Vulkan, llvmpipe for OpenGL through EGL), so that the tests and the benchmark run even without a GPU.
# A machine with a GPU driver keeps it; the software adapters are only added beside it.
set -euo pipefail
need=(mesa-vulkan-drivers libegl-mesa0 libegl1 libgl1-mesa-dri)
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
# The crate must keep compiling for the web (WebGPU): CI checks and lints it for wasm32.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "installing the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
