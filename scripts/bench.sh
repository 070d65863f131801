#!/usr/bin/env bash
# The main job: sets the machine up, then runs the benchmark on the best adapter present (a real GPU when
# there is one, else Mesa's software Vulkan adapter). Extra arguments go to the benchmark (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --release --locked -p wgoptim-bench -- "$@"
