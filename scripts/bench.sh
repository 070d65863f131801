#!/usr/bin/env bash
# The main job: sets the machine up, then runs the benchmark on the best adapter present (a real GPU when
# there is one, else Mesa's software Vulkan adapter). Extra arguments go to the benchmark (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# EGL (the OpenGL adapter) wants a runtime directory; headless machines often have none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo run --release --locked -p wgoptim-bench -- "$@"
