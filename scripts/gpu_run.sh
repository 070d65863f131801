#!/usr/bin/env bash
# wgoptim-bench and the PyTorch comparison (scripts/bench_torch) side by side on one GPU machine, at 1M, 16M
# and 64M parameters in 1, 148 (GPT-2 small's layout, scaled) and 1000 tensors; everything goes into one
# folder: each tool's table, JSON and log per size, the machine's description, and summary.md (wgoptim's
# target ratios and its AdamW against torch's fused AdamW, model by model).
#
# The GPU machine has no Rust toolchain and may lack the Vulkan loader, so both are prepared here first:
#
#   scripts/gpu_run.sh --prepare      # release binary into .gpu/, the loader's Debian packages into .gl/
#
# and then, on the GPU machine, from the repository root, with .gpu and .gl carried along:
#
#   for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
#   scripts/gpu_run.sh /tmp/gpu_run && tar czf "$OUT/gpu_run.tgz" -C /tmp gpu_run && cp /tmp/gpu_run/summary.md "$OUT/"
#
# (a device run brings back at most 8 files, hence the archive). Sizes, layouts and the bench's other
# arguments can be changed with GPU_RUN_SIZES (default "1M 16M 64M"), GPU_RUN_TENSORS (default
# "1,gpt2,1000") and GPU_RUN_BENCH_ARGS (default "--backend vulkan"). Each size runs the bench, then torch,
# so that both see the machine in the same state; neither runs while the other does.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    set -e
    exclude="$(git rev-parse --git-path info/exclude)"
    for d in /.gpu/ /.gl/; do
        grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >>"$exclude"
    done
    cargo build --release --locked -p wgoptim-bench
    target="${CARGO_TARGET_DIR:-target}"
    mkdir -p .gpu
    cp "$target/release/wgoptim-bench" .gpu/
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    echo "prepared: .gpu/wgoptim-bench and .gl/*.deb; carry both (carry: [\".gpu\", \".gl\"])"
    exit 0
fi

out="${1:?usage: scripts/gpu_run.sh OUT_DIR | --prepare}"
mkdir -p "$out"
bin="${WGOPTIM_BENCH_BIN:-.gpu/wgoptim-bench}"
if [ ! -x "$bin" ]; then
    echo "no bench binary at $bin: run scripts/gpu_run.sh --prepare here first and carry .gpu" >&2
    exit 1
fi
sizes="${GPU_RUN_SIZES:-1M 16M 64M}"
tensors="${GPU_RUN_TENSORS:-1,gpt2,1000}"
read -r -a bench_args <<<"${GPU_RUN_BENCH_ARGS:---backend vulkan}"

# The Vulkan loader, where the machine has none and .gl came along.
if ! ldconfig -p | grep -q 'libvulkan\.so\.1' && compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
# Without a GPU adapter, point the loaders at NVIDIA's driver files where the machine has them.
nvidia=/usr/local/nvidia/share
if ! "$bin" --list-adapters 2>/dev/null | grep -q 'DiscreteGpu\|IntegratedGpu' &&
    [ -f "$nvidia/vulkan/icd.d/nvidia_icd.json" ]; then
    export VK_DRIVER_FILES="$nvidia/vulkan/icd.d/nvidia_icd.json"
    export __EGL_VENDOR_LIBRARY_FILENAMES="$nvidia/glvnd/egl_vendor.d/10_nvidia.json"
fi

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "sizes: $sizes · tensors: $tensors · bench arguments: ${bench_args[*]}"
    echo
    nvidia-smi 2>&1 || true
    echo
    echo "adapters:"
    "$bin" --list-adapters 2>&1
    echo
    python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.is_available())' 2>&1
} >"$out/machine.txt"

status=0
for size in $sizes; do
    echo "== $size: wgoptim-bench" >&2
    if ! "$bin" "${bench_args[@]}" --params "$size" --tensors "$tensors" --tensor-sweep-params "$size" \
        --no-progress --json-out "$out/bench-$size.json" >"$out/bench-$size.md" 2>"$out/bench-$size.log"; then
        echo "wgoptim-bench failed at $size: see bench-$size.log" >&2
        status=1
    fi
    echo "== $size: torch" >&2
    if ! python3 scripts/bench_torch/bench_torch_adamw.py --optimizers all --sizes "$size" --tensors "$tensors" \
        --tensor-sweep-params "$size" --json >"$out/torch-$size.json" 2>"$out/torch-$size.log"; then
        echo "the torch comparison failed at $size: see torch-$size.log" >&2
        status=1
    fi
done

python3 - "$out" $sizes >"$out/summary.md" <<'EOF' || status=1
"""wgoptim's target ratios and its AdamW against torch's fused AdamW, from the run's JSON files."""
import json
import sys
from pathlib import Path

sys.path.insert(0, "scripts/bench_torch")
import bench_torch_adamw as torch_bench  # noqa: E402

out, sizes = Path(sys.argv[1]), sys.argv[2:]


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cell(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


ratio_rows, side_rows = [], []
for size in sizes:
    bench, torch = load(out / f"bench-{size}.json"), load(out / f"torch-{size}.json")
    torch_cases = (torch or {}).get("results", {}).get("cases", [])
    if bench is None:
        side_rows.append([size, "-", "-", "no wgoptim-bench JSON", "-", "-", "-", "-"])
        continue
    limits = bench["target_limits"]
    for t in bench["targets"]:
        def r(key):
            v = t.get(key)
            if v is None:
                return "-"
            verdict = "ok" if v["ratio"] <= limits[key] else "OVER"
            return f"{v['ratio']:.2f} {verdict} ({v['row']})"
        ratio_rows.append([t["layout"], torch_bench.human_count(t["params"]), r("adamw_vs_naive_vec4"),
                           r("elementwise_vs_copy"), r("lamb_vs_adamw"), r("guarded_vs_adamw")])
    for c in bench["results"]["cases"]:
        if c["optimizer"] != "adamw":
            continue
        theirs = next((x for x in torch_cases if x["optimizer"] == "adamw" and x["layout"] == c["layout"]
                       and x["target_params"] == c["target_params"]), None)
        side_rows.append([
            c["layout"], torch_bench.human_count(c["params"]), cell(c["step_ms"]),
            cell(theirs and theirs["step_ms"]),
            cell(theirs and c["step_ms"] / theirs["step_ms"], "{:.2f}"),
            cell(c["copy_gbps"], "{:.1f}"), cell(theirs and theirs["copy_gbps"], "{:.1f}"),
            cell(c["time_vs_naive_adamw_vec4"], "{:.2f}"),
        ])

print("# GPU run: wgoptim-bench beside torch's fused optimizers\n")
print("## wgoptim's target ratios (issue 11)\n")
print(torch_bench.markdown(
    ["tensors", "params", "adamw ÷ naive4 (≤ 1.10)", "worst elementwise ÷ copy (≤ 1.20)",
     "lamb ÷ adamw (≤ 2.00)", "guarded ÷ adamw (≤ 1.30)"], ratio_rows))
print("## AdamW: wgoptim against torch.optim.AdamW(fused=True)\n")
print(torch_bench.markdown(
    ["tensors", "params", "wgoptim ms", "torch ms", "wgoptim ÷ torch", "wgoptim copy GB/s",
     "torch copy GB/s", "wgoptim ÷ naive4"], side_rows))
EOF
cat "$out/summary.md"
exit $status
