#!/usr/bin/env python3
"""Times torch's fused optimizers on CUDA at the sizes wgoptim-bench uses, with the same columns.

Run it on the GPU machine where ``wgoptim-bench`` runs, so that the two tables sit side by side:

    python scripts/bench_torch/bench_torch_adamw.py                 # table, AdamW(fused=True)
    python scripts/bench_torch/bench_torch_adamw.py --json > torch.json

Default: ``torch.optim.AdamW(fused=True)`` (PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight
decay 0.01) on models of 1M, 16M, 64M and 256M parameters in one tensor, and at 16M parameters in 1, 16,
GPT-2 small's 148 (scaled) and 1000 tensors. ``--optimizers`` adds the other fused optimizers under
wgoptim-bench's names.

Columns, as wgoptim-bench's: step ms is the median of CUDA-event times around ``opt.step()``; GB/s counts
the bytes the step must move (AdamW: 28 per parameter); ``time ÷ copy`` divides the step time by that of
``dst.copy_(src)`` on float32 tensors moving the same number of bytes, in the same process (the JSON keeps
``vs_copy``, its inverse: the fraction of the copy's bandwidth); host µs is the
median time of the ``opt.step()`` call with the GPU idle; state B/param is the optimizer state on the GPU
per parameter. Dispatches and submissions are not known to torch and print as ``-``. Parameters,
gradients and the copy's source hold uniform random values in [-1, 1) (seeded), as wgoptim-bench's do:
timing on zeros can flatter a kernel.

Without CUDA (or without torch) the script says so and exits with status 0: there is nothing to measure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

GPT2_SMALL_PARAMS = 124_439_808

# name -> (bytes moved per parameter per step, optimizer class name, keyword arguments)
OPTIMIZERS = {
    "adamw": (28, "AdamW", {}),
    "adamw_amsgrad": (36, "AdamW", {"amsgrad": True}),
    "adam": (28, "Adam", {}),
    "sgd": (12, "SGD", {}),
    "sgd_momentum": (20, "SGD", {"momentum": 0.9}),
    "sgd_nesterov": (20, "SGD", {"momentum": 0.9, "nesterov": True}),
}


def parse_count(s: str) -> int:
    """Parses 1000, 64K, 16M, 1.5G (decimal suffixes), as wgoptim-bench does."""
    t = s.strip().replace("_", "")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}.get(t[-1:].upper(), 1)
    digits = t[:-1] if scale != 1 else t
    try:
        value = float(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{s}` is not a count (examples: 1000, 64K, 16M, 1.5G)")
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"`{s}` is not a count (examples: 1000, 64K, 16M, 1.5G)")
    return int(value)


def count_list(s: str) -> list[int]:
    return [parse_count(x) for x in s.split(",") if x.strip()]


def layout_list(s: str) -> list[str]:
    out = []
    for x in s.split(","):
        x = x.strip().lower()
        if x == "gpt2" or (x and parse_count(x) > 0):
            out.append(x if x == "gpt2" else str(parse_count(x)))
    return out


def human_count(n: int) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.0f}{suffix}" if abs(v - round(v)) < 0.05 or v >= 100 else f"{v:.1f}{suffix}"
    return str(n)


def gpt2_small(divisor: int) -> list[tuple[str, list[int]]]:
    """GPT-2 small's 148 parameter tensors, every dimension divided by ``divisor`` (rounded up), as
    ``wgoptim::model_shapes::gpt2_small``."""
    d = max(1, divisor)

    def s(n: int) -> int:
        return -(-n // d)

    vocab, ctx, width, layers = 50257, 1024, 768, 12
    t = [("wte.weight", [s(vocab), s(width)]), ("wpe.weight", [s(ctx), s(width)])]
    for layer in range(layers):
        p = f"h.{layer}."
        t += [
            (p + "ln_1.weight", [s(width)]),
            (p + "ln_1.bias", [s(width)]),
            (p + "attn.c_attn.weight", [s(width), s(3 * width)]),
            (p + "attn.c_attn.bias", [s(3 * width)]),
            (p + "attn.c_proj.weight", [s(width), s(width)]),
            (p + "attn.c_proj.bias", [s(width)]),
            (p + "ln_2.weight", [s(width)]),
            (p + "ln_2.bias", [s(width)]),
            (p + "mlp.c_fc.weight", [s(width), s(4 * width)]),
            (p + "mlp.c_fc.bias", [s(4 * width)]),
            (p + "mlp.c_proj.weight", [s(4 * width), s(width)]),
            (p + "mlp.c_proj.bias", [s(width)]),
        ]
    t += [("ln_f.weight", [s(width)]), ("ln_f.bias", [s(width)])]
    return t


def shapes(layout: str, params: int) -> list[list[int]]:
    """The tensor shapes of a model, as wgoptim-bench's ``Layout::tensors``."""
    if layout == "gpt2":
        divisor = max(1, round(math.sqrt(GPT2_SMALL_PARAMS / max(params, 1))))
        return [shape for _, shape in gpt2_small(divisor)]
    n = int(layout)
    if params < n:
        raise ValueError(f"{params} parameters cannot be split into {n} tensors")
    each = params // n
    return [[each + params % n]] + [[each] for _ in range(n - 1)]


def numel(shape: list[int]) -> int:
    return math.prod(shape)


class Timer:
    """Warm-up, then CUDA-event time per step, wall time of back-to-back steps, host time per call.

    On a CPU device (only the tests use one) the per-step time is host wall time instead of events."""

    def __init__(self, torch, device, warmup: int, steps: int | None, min_time: float, max_steps: int):
        self.torch = torch
        self.cuda = device.type == "cuda"
        self.warmup = warmup
        self.steps = steps
        self.min_time = min_time
        self.max_steps = max_steps

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def timed_steps(self, fn, n: int) -> list[float]:
        if not self.cuda:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t) * 1e3)
            return out
        cuda = self.torch.cuda
        events = [(cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        cuda.synchronize()
        return [start.elapsed_time(end) for start, end in events]

    def measure(self, fn) -> dict:
        for _ in range(self.warmup):
            fn()
        self.sync()
        if self.steps is None:
            t = time.perf_counter()
            fn()
            self.sync()
            one = max(time.perf_counter() - t, 1e-6)
            n = min(max(math.ceil(self.min_time / one), 3), self.max_steps)
        else:
            n = self.steps
        gpu_ms = self.timed_steps(fn, n)
        t = time.perf_counter()
        for _ in range(n):
            fn()
        self.sync()
        wall_ms = (time.perf_counter() - t) * 1e3 / n
        host_us = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            host_us.append((time.perf_counter() - t) * 1e6)
            self.sync()
        return {
            "steps": n,
            "gpu_ms": {"median": statistics.median(gpu_ms), "min": min(gpu_ms), "mean": statistics.fmean(gpu_ms)},
            "wall_ms": wall_ms,
            "host_us": {"median": statistics.median(host_us), "min": min(host_us), "mean": statistics.fmean(host_us)},
        }


def markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), 3] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    numeric = [i > 0 and all(r[i] == "-" or r[i][:1].isdigit() for r in rows) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(cells) + " |\n"

    out = line([h.ljust(w) for h, w in zip(header, widths)])
    out += line(["-" * (w - 1) + ":" if numeric[i] else "-" * w for i, w in enumerate(widths)])
    for r in rows:
        out += line([c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))])
    return out


def table(report: dict) -> str:
    a = report["adapter"]
    out = (
        f"torch {report['torch_version']} fused optimizers · {report['date_utc']} UTC\n"
        f"device: {a['name']} (CUDA {a['cuda']}, driver capability {a['capability']}) · timer: CUDA events\n\n"
    )
    header = ["optimizer", "tensors", "params", "chunks", "steps", "step ms", "timer", "GB/s", "copy GB/s",
              "time ÷ copy", "B/param", "dispatches", "submits", "host µs", "state B/param"]
    rows = []
    for c in report["results"]["cases"]:
        rows.append([
            c["optimizer"],
            f"gpt2 ({c['tensors']})" if c["layout"] == "gpt2" else str(c["tensors"]),
            human_count(c["params"]),
            "-",
            str(c["measurement"]["steps"]),
            f"{c['step_ms']:.3f}",
            "gpu",
            f"{c['gbps']:.2f}",
            "-" if c["copy_gbps"] is None else f"{c['copy_gbps']:.2f}",
            "-" if c["time_vs_copy"] is None else f"{c['time_vs_copy']:.2f}",
            str(c["bytes_per_param"]),
            "-",
            "-",
            f"{c['host_us']:.1f}",
            f"{c['state_bytes_per_param']:.2f}",
        ])
    out += markdown(header, rows)
    if report["results"]["skipped"]:
        out += "\nskipped:\n"
        for s in report["results"]["skipped"]:
            out += f"- {s['optimizer'] or 'all optimizers at'} {human_count(s['target_params'])} params × {s['layout']} tensors: {s['reason']}\n"
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizers", default="adamw", help=f"comma-separated: {', '.join(OPTIMIZERS)}, or all [adamw]")
    p.add_argument("--sizes", type=count_list, default=None, help="size sweep, one tensor each [1M,16M,64M,256M]")
    p.add_argument("--tensors", type=layout_list, default=None, help="tensor sweep layouts [1,16,gpt2,1000]")
    p.add_argument("--tensor-sweep-params", type=parse_count, default=None, help="tensor sweep size [16M]")
    p.add_argument("--max-params", type=parse_count, default=None, help="skip larger models")
    p.add_argument("--steps", type=int, default=None, help="timed steps per phase [fill --min-time, 3 to 200]")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first [3]")
    p.add_argument("--min-time", type=float, default=None, help="seconds per timing phase [0.5]")
    p.add_argument("--quick", action="store_true", help="64K and 256K parameters, few steps")
    p.add_argument("--device", default="cuda", help="torch device [cuda]")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = p.parse_args(argv)
    names = list(OPTIMIZERS) if args.optimizers == "all" else [s.strip() for s in args.optimizers.split(",")]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown or not names:
        p.error(f"unknown optimizer {unknown}: known are {', '.join(OPTIMIZERS)}, or all")
    args.optimizer_names = names
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be at least 1")
    quick = args.quick
    args.sizes = args.sizes or ([64_000, 256_000] if quick else [10**6, 16 * 10**6, 64 * 10**6, 256 * 10**6])
    args.tensors = args.tensors or ["1", "16", "gpt2", "1000"]
    args.tensor_sweep_params = args.tensor_sweep_params or (256_000 if quick else 16 * 10**6)
    args.warmup = 1 if quick and args.warmup is None else (3 if args.warmup is None else args.warmup)
    args.min_time = args.min_time or (0.05 if quick else 0.5)
    args.max_steps = 10 if quick else 200
    return args


def no_measurement(args: argparse.Namespace, reason: str) -> int:
    print(f"bench_torch_adamw: {reason}; nothing to measure.", file=sys.stderr)
    if args.json:
        print(json.dumps({"tool": "bench_torch_adamw", "skipped": reason}))
    return 0


def models(args) -> list[tuple[str, int]]:
    out = [("1", s) for s in args.sizes]
    for layout in args.tensors:
        if (layout, args.tensor_sweep_params) not in out:
            out.append((layout, args.tensor_sweep_params))
    return out


def uniform(torch, shape, device):
    """float32 values uniform in [-1, 1): data to time on, not zeros."""
    return torch.rand(shape, dtype=torch.float32, device=device).mul_(2).sub_(1)


def run(args, torch) -> dict:
    torch.manual_seed(0)
    device = torch.device(args.device)
    timer = Timer(torch, device, args.warmup, args.steps, args.min_time, args.max_steps)
    results = {"cases": [], "copies": [], "skipped": []}
    copies: dict[int, float | None] = {}
    for layout, target in models(args):
        def skip(reason, optimizer=None):
            print(f"skipped {optimizer or 'all'} at {human_count(target)} × {layout}: {reason}", file=sys.stderr)
            results["skipped"].append({"optimizer": optimizer, "layout": layout, "target_params": target, "reason": reason})

        if args.max_params is not None and target > args.max_params:
            skip(f"above --max-params {human_count(args.max_params)}")
            continue
        try:
            model = shapes(layout, target)
        except ValueError as e:
            skip(str(e))
            continue
        params = sum(numel(s) for s in model)
        for name in args.optimizer_names:
            nbytes = OPTIMIZERS[name][0] * params
            if nbytes in copies:
                continue
            try:
                src = uniform(torch, -(-nbytes // 8), device)
                dst = torch.empty_like(src)
                m = timer.measure(lambda: dst.copy_(src))
                gbps = src.numel() * 8 / (m["gpu_ms"]["median"] * 1e6)
                results["copies"].append({"bytes": src.numel() * 8, "measurement": m, "gbps": gbps})
                copies[nbytes] = gbps
            except torch.cuda.OutOfMemoryError as e:
                print(f"no copy baseline for {nbytes} bytes: {e}", file=sys.stderr)
                copies[nbytes] = None
            finally:
                src = dst = None
                torch.cuda.empty_cache()
        try:
            ps = [uniform(torch, s, device).requires_grad_() for s in model]
            for p in ps:
                p.grad = uniform(torch, p.shape, device)
        except torch.cuda.OutOfMemoryError as e:
            skip(f"out of GPU memory: {e}")
            ps = None
            torch.cuda.empty_cache()
            continue
        for name in args.optimizer_names:
            bpp, cls, kwargs = OPTIMIZERS[name]
            try:
                opt = getattr(torch.optim, cls)(ps, lr=1e-3, fused=True, **kwargs)
                m = timer.measure(opt.step)
            except torch.cuda.OutOfMemoryError as e:
                skip(f"out of GPU memory: {e}", name)
                opt = None
                torch.cuda.empty_cache()
                continue
            state_bytes = sum(
                v.numel() * v.element_size()
                for st in opt.state.values()
                for v in st.values()
                if torch.is_tensor(v) and v.device.type == device.type
            )
            step_ms = m["gpu_ms"]["median"]
            gbps = bpp * params / (step_ms * 1e6)
            copy = copies.get(bpp * params)
            results["cases"].append({
                "optimizer": name,
                "layout": layout,
                "target_params": target,
                "params": params,
                "tensors": len(model),
                "measurement": m,
                "step_ms": step_ms,
                "time_source": "cuda_events" if timer.cuda else "wall",
                "bytes_per_param": bpp,
                "bytes_per_step": bpp * params,
                "gbps": gbps,
                "copy_gbps": copy,
                "vs_copy": None if copy is None else gbps / copy,
                "time_vs_copy": None if copy is None else copy / gbps,
                "host_us": m["host_us"]["median"],
                "state_bytes_per_param": state_bytes / params,
                "torch_optimizer": f"torch.optim.{cls}(fused=True, {', '.join(f'{k}={v}' for k, v in kwargs.items())})",
            })
            opt = None
            torch.cuda.empty_cache()
        ps = None
        torch.cuda.empty_cache()
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        return no_measurement(args, "torch is not installed (pip install -r scripts/bench_torch/requirements.txt)")
    if not torch.cuda.is_available():
        return no_measurement(args, f"CUDA is not available to torch {torch.__version__}")
    device = torch.device(args.device)
    if device.type != "cuda":
        return no_measurement(args, f"--device {args.device} is not a CUDA device")
    props = torch.cuda.get_device_properties(device)
    report = {
        "tool": "bench_torch_adamw",
        "torch_version": torch.__version__,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "adapter": {
            "name": props.name,
            "cuda": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}",
            "memory_bytes": props.total_memory,
        },
        "host": {"os": platform.system().lower(), "arch": platform.machine(), "cpus": os.cpu_count()},
        "config": {
            "optimizers": args.optimizer_names,
            "sizes": args.sizes,
            "layouts": args.tensors,
            "tensor_sweep_params": args.tensor_sweep_params,
            "max_params": args.max_params,
            "warmup": args.warmup,
            "steps": args.steps,
            "min_time": args.min_time,
            "lr": 1e-3,
        },
    }
    report["results"] = run(args, torch)
    print(json.dumps(report, indent=2) if args.json else table(report), end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
