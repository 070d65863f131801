#!/usr/bin/env bash
# The test command: sets the machine up, then runs every test of the workspace. GPU tests run once per
# adapter present and name it; WGPU_BACKEND=vulkan (or gl) and WGPU_ADAPTER_NAME=substring narrow the set.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --web
# EGL (the OpenGL adapter) wants a runtime directory; headless machines often have none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# The `tokio` feature adds the tokio runtime tests and the tokio example.
cargo test --workspace --locked --features wgoptim/tokio "$@"
# The web example, trained in headless Chromium on WebGPU, must pass its in-page check against the CPU reference.
scripts/web_test.sh
