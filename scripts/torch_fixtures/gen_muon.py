#!/usr/bin/env python3
"""Golden fixtures for Muon: torch.optim.Muon on the 2-D tensors of the Muon
groups and torch.optim.AdamW on the AdamW groups, stepped side by side as the
two-rule wgoptim ``Muon`` optimizer steps them.

torch's ``_zeropower_via_newtonschulz`` casts X to bfloat16 for the
Newton-Schulz iterations; wgoptim runs them in f32. So every case is run three
times, with torch's own code each time:

* ``stock``: torch as shipped (Newton-Schulz in bfloat16, the rest in f32);
* ``f32``:   the same code with the cast going to float32 instead (the module's
  ``torch`` name is swapped for a proxy whose ``bfloat16`` is ``float32``), so
  the whole step runs in f32: the algorithm wgoptim implements, at its precision;
* ``f64``:   parameters, gradients, state and Newton-Schulz in float64: the
  exact trajectory, up to f64 rounding.

The GPU is tested against ``f32``; the tolerance comes from the measured gap
between ``f32`` and ``f64`` (two f32 computations of the same trajectory that
differ only in rounding each lie within that gap of the exact one, so within
twice it of each other; the tests allow four times it, the second factor of 2
for the GPU's different summation order and fma contraction). The gap between
``stock`` and ``f64`` is recorded too: bfloat16's rounding (8 bits of mantissa)
is orders of magnitude coarser than f32's, which is why the GPU is not tested
against ``stock`` at f32 tolerances.

Files under tests/fixtures/muon/ (or --out):

* ``<case>.safetensors`` for the small cases: ``init.<name>``,
  ``grad.<step>.<name>``, ``param.<variant>.<step>.<name>`` (variants f32 and
  stock; steps 1..=N) and ``state.<variant>.<key>.<name>`` after the last step
  (Muon tensors: momentum_buffer; AdamW tensors: exp_avg, exp_avg_sq);
* ``large.safetensors``: one 1024 x 4096 matrix whose initial values and
  gradients are not stored but generated from a counter-based generator
  (SplitMix64, the one in tests/gpu/util.rs) that gives the same f32 bits in
  numpy and in Rust; the parameters after every step and the final momentum
  buffer are stored at ``samples`` (a fixed set of element indices) only.

Metadata: ``tensors`` (name, shape, group), ``groups`` (per group: ``rule``,
``lr_scale``, ``weight_decay``, ``momentum`` or ``betas``), ``lrs``,
``config`` (Muon's and AdamW's hyperparameters), ``gaps`` (per variant f32 and
stock, per step, per tensor: the largest |variant - f64| over the parameter's
elements) and ``generator`` (versions). Run with the pinned versions:

    python scripts/torch_fixtures/gen_muon.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.optim._muon as torch_muon

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, warmup_cosine  # noqa: E402

SEED = 20261202
GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1

# Small cases: tensors (name, shape, group, init scale) and groups (rule and overrides).
CASES = {
    "muon_groups": {
        "steps": 8,
        "peak": 0.02,
        "muon": {"weight_decay": 0.1, "momentum": 0.95, "nesterov": True, "adjust_lr_fn": "original"},
        "adamw": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
        "tensors": [
            ("square", [64, 64], 0, 0.02),
            ("tall", [96, 40], 0, 0.02),
            ("bias", [37], 1, 0.5),
            ("head", [10, 33], 1, 0.1),
            ("wide", [24, 130], 2, 0.02),
        ],
        "groups": [
            {"rule": "muon", "lr_scale": 1.0},
            {"rule": "adamw", "lr_scale": 0.1, "weight_decay": 0.01, "betas": [0.9, 0.95]},
            {"rule": "muon", "lr_scale": 0.5, "weight_decay": 0.0, "momentum": 0.9},
        ],
    },
    "muon_plain_rms": {
        "steps": 6,
        "peak": 0.02,
        "muon": {"weight_decay": 0.1, "momentum": 0.95, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
        "adamw": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
        "tensors": [
            ("odd_tall", [33, 17], 0, 0.05),
            ("strip", [5, 300], 0, 0.05),
            ("row", [1, 50], 0, 0.05),
            ("column", [70, 1], 0, 0.05),
            ("tile_edge", [65, 129], 0, 0.05),
        ],
        "groups": [{"rule": "muon", "lr_scale": 1.0}],
    },
}

# The 1024 x 4096 case costs 19 GFLOP per Newton-Schulz iteration, which a CPU adapter (lavapipe, llvmpipe)
# runs at 1-2 GFLOP/s: it takes two steps of one iteration each, to stay near 20 s per adapter. The small
# cases run torch's default five iterations.
LARGE = {
    "steps": 2,
    "peak": 0.02,
    "shape": [1024, 4096],
    # Powers of two, so the generated values are exact in f32 on both sides.
    "init_scale": 2.0**-6,
    "grad_scale": 2.0**-4,
    "init_seed": 7,
    "grad_seed": 1000,
    "samples": 4096,
    "muon": {"weight_decay": 0.1, "momentum": 0.95, "nesterov": True, "adjust_lr_fn": "match_rms_adamw", "ns_steps": 1},
}


def splitmix_noise(seed: int, n: int, scale: float) -> np.ndarray:
    """tests/gpu/util.rs `noise`: element i is SplitMix64 of seed + (i + 1) * golden,
    its top 24 bits mapped to [-scale, scale); exact in f32 for a power-of-two scale."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN))
        z = x
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(40)).astype(np.float64)
    return ((k / 2.0**24 * 2.0 - 1.0) * scale).astype(np.float32)


class _TorchWithNsDtype:
    """torch, except that ``bfloat16`` names another dtype: the Newton-Schulz cast
    in torch.optim._muon then goes to that dtype and the code runs unchanged."""

    def __init__(self, dtype):
        self._dtype = dtype

    def __getattr__(self, name):
        if name == "bfloat16":
            return self._dtype
        return getattr(torch, name)


def run(variant: str, tensors, groups, init, grads, lrs, muon_cfg, adamw_cfg, snapshot):
    """Steps torch's Muon (and AdamW for the AdamW groups); calls snapshot(step, params) after each step.
    Returns the params and the two optimizers."""
    dtype = torch.float64 if variant == "f64" else torch.float32
    params = {n: torch.nn.Parameter(torch.from_numpy(np.asarray(init[n])).to(dtype).clone()) for n, *_ in tensors}
    muon_groups, adamw_groups = [], []
    for g, meta in enumerate(groups):
        members = [params[n] for n, _s, gg, *_ in tensors if gg == g]
        if not members:
            continue
        if meta["rule"] == "muon":
            entry = {"params": members, "lr": 0.0, "lr_scale": meta["lr_scale"]}
            if "weight_decay" in meta:
                entry["weight_decay"] = meta["weight_decay"]
            if "momentum" in meta:
                entry["momentum"] = meta["momentum"]
            muon_groups.append(entry)
        else:
            entry = {"params": members, "lr": 0.0, "lr_scale": meta["lr_scale"]}
            if "weight_decay" in meta:
                entry["weight_decay"] = meta["weight_decay"]
            if "betas" in meta:
                entry["betas"] = tuple(meta["betas"])
            adamw_groups.append(entry)
    muon = torch.optim.Muon(
        muon_groups,
        lr=0.0,
        weight_decay=muon_cfg["weight_decay"],
        momentum=muon_cfg["momentum"],
        nesterov=muon_cfg["nesterov"],
        adjust_lr_fn=muon_cfg["adjust_lr_fn"],
        ns_steps=muon_cfg.get("ns_steps", 5),
    )
    adamw = None
    if adamw_groups:
        adamw = torch.optim.AdamW(
            adamw_groups,
            lr=0.0,
            betas=tuple(adamw_cfg["betas"]),
            eps=adamw_cfg["eps"],
            weight_decay=adamw_cfg["weight_decay"],
            foreach=False,
            fused=False,
        )
    original = torch_muon.torch
    if variant == "f32":
        torch_muon.torch = _TorchWithNsDtype(torch.float32)
    elif variant == "f64":
        torch_muon.torch = _TorchWithNsDtype(torch.float64)
    try:
        for step, lr in enumerate(lrs, start=1):
            for n, p in params.items():
                p.grad = torch.from_numpy(np.asarray(grads(step, n))).to(dtype)
            for opt in (muon, adamw):
                if opt is None:
                    continue
                for group in opt.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                opt.step()
            snapshot(step, params)
    finally:
        torch_muon.torch = original
    return params, muon, adamw


def gap(a: torch.Tensor, exact: torch.Tensor) -> float:
    return float((a.detach().double() - exact.detach().double()).abs().max())


def small_case(name: str, case: dict, out: Path) -> dict:
    rng = np.random.default_rng(SEED + sum(map(ord, name)))
    tensors = case["tensors"]
    init = {n: (rng.standard_normal(s) * sc).astype(np.float32) for n, s, _g, sc in tensors}
    grad_list = [
        {n: (rng.standard_normal(s) * 0.1).astype(np.float32) for n, s, *_ in tensors} for _ in range(case["steps"])
    ]
    lrs = warmup_cosine(case["steps"], peak=case["peak"], floor=case["peak"] / 10, warmup=2)
    trajectories = {}
    finals = {}
    for variant in ("f64", "f32", "stock"):
        snaps = {}

        def snapshot(step, params, snaps=snaps):
            snaps[step] = {n: p.detach().clone() for n, p in params.items()}

        params, muon, adamw = run(
            variant, tensors, case["groups"], init, lambda s, n: grad_list[s - 1][n], lrs, case["muon"],
            case["adamw"], snapshot,
        )
        trajectories[variant] = snaps
        finals[variant] = (params, muon, adamw)
    out_tensors = {}
    for n, *_ in tensors:
        out_tensors[f"init.{n}"] = init[n]
        for s in range(1, case["steps"] + 1):
            out_tensors[f"grad.{s}.{n}"] = grad_list[s - 1][n]
            for variant in ("f32", "stock"):
                out_tensors[f"param.{variant}.{s}.{n}"] = trajectories[variant][s][n].numpy()
    gaps = {v: [{n: gap(trajectories[v][s][n], trajectories["f64"][s][n]) for n, *_ in tensors}
                for s in range(1, case["steps"] + 1)] for v in ("f32", "stock")}
    for variant in ("f32", "stock"):
        params, muon, adamw = finals[variant]
        for n, p in params.items():
            for opt in (muon, adamw):
                if opt is not None and p in opt.state:
                    for key, value in opt.state[p].items():
                        if torch.is_tensor(value) and value.numel() == p.numel():
                            out_tensors[f"state.{variant}.{key}.{n}"] = value.numpy()
    meta = {
        "tensors": json.dumps([[n, s, g] for n, s, g, _ in tensors]),
        "groups": json.dumps(case["groups"]),
        "lrs": json.dumps(lrs),
        "config": json.dumps({"muon": case["muon"], "adamw": case["adamw"]}),
        "gaps": json.dumps(gaps),
        "generator": pins("python", "torch", "numpy", "safetensors"),
    }
    save_numpy(out_tensors, out / f"{name}.safetensors", meta)
    return gaps


def large_case(out: Path) -> dict:
    rows, cols = LARGE["shape"]
    numel = rows * cols
    init = splitmix_noise(LARGE["init_seed"], numel, LARGE["init_scale"]).reshape(rows, cols)

    def grads(step, _name):
        return splitmix_noise(LARGE["grad_seed"] * step, numel, LARGE["grad_scale"]).reshape(rows, cols)

    samples = np.sort(np.random.default_rng(SEED).choice(numel, LARGE["samples"], replace=False)).astype(np.int64)
    lrs = warmup_cosine(LARGE["steps"], peak=LARGE["peak"], floor=LARGE["peak"] / 10, warmup=1)
    tensors = [("big", [rows, cols], 0, 0.0)]
    groups = [{"rule": "muon", "lr_scale": 1.0}]
    trajectories = {}
    finals = {}
    for variant in ("f64", "f32", "stock"):
        snaps = {}

        def snapshot(step, params, snaps=snaps):
            snaps[step] = params["big"].detach().clone()

        params, muon, _ = run(variant, tensors, groups, {"big": init}, grads, lrs, LARGE["muon"], None, snapshot)
        trajectories[variant] = snaps
        finals[variant] = (params, muon)
        print(f"large: {variant} done", flush=True)
    out_tensors = {"samples": samples.astype(np.float32)}
    if not np.array_equal(out_tensors["samples"].astype(np.int64), samples):
        raise RuntimeError("sample indices are not exact in f32")
    for s in range(1, LARGE["steps"] + 1):
        for variant in ("f32", "stock"):
            out_tensors[f"param.{variant}.{s}.big"] = trajectories[variant][s].numpy().reshape(-1)[samples]
    for variant in ("f32", "stock"):
        params, muon = finals[variant]
        buf = muon.state[params["big"]]["momentum_buffer"]
        out_tensors[f"state.{variant}.momentum_buffer.big"] = buf.numpy().reshape(-1)[samples]
    gaps = {v: [{"big": gap(trajectories[v][s], trajectories["f64"][s])} for s in range(1, LARGE["steps"] + 1)]
            for v in ("f32", "stock")}
    meta = {
        "tensors": json.dumps([["big", [rows, cols], 0]]),
        "groups": json.dumps(groups),
        "lrs": json.dumps(lrs),
        "config": json.dumps({"muon": LARGE["muon"]}),
        "generated": json.dumps({k: LARGE[k] for k in ("init_scale", "grad_scale", "init_seed", "grad_seed")}),
        "gaps": json.dumps(gaps),
        "generator": pins("python", "torch", "numpy", "safetensors"),
    }
    save_numpy(out_tensors, out / "large.safetensors", meta)
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/fixtures/muon")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, case in CASES.items():
        gaps = small_case(name, case, args.out)
        for variant, steps in gaps.items():
            worst = {n: max(s[n] for s in steps) for n in steps[0]}
            print(f"{name}: max |{variant} - f64| per tensor: {worst}")
    if not args.skip_large:
        gaps = large_case(args.out)
        for variant, steps in gaps.items():
            print(f"large: max |{variant} - f64| per step: {[s['big'] for s in steps]}")


if __name__ == "__main__":
    main()
