#!/usr/bin/env python3
"""Golden fixtures for the step guard: PyTorch's gradient clipping, parameter
groups and GradScaler around torch.optim optimizers.

Writes one file per case under tests/fixtures/torch_guard/ (or --out):

* ``init.<name>``: the initial parameters;
* ``grad.<step>.<name>``: the gradient as the backward pass leaves it at step
  1..=N (with a GradScaler: multiplied by that step's loss scale, some steps
  holding inf or NaN);
* ``param.<step>.<name>``: the parameters after every step;
* ``state.<torch state key>.<name>``: the optimizer state after the last step;

with metadata ``tensors`` (name, shape, group), ``groups`` (per group
``lr_scale``, ``weight_decay`` and ``betas`` or ``momentum``), ``lrs`` (the base
learning rate of every step), ``optimizer``, ``config``, ``guard`` (the clipping
and scaler settings), ``norms`` (what clip_grad_norm_ returned at every step),
``scales`` (the loss scale each step's gradient was multiplied by, and the one
after the last update), ``found_inf`` (1 for every skipped step) and
``generator`` (the versions used).

torch runs on the CPU in float32, one thread, the optimizers with
``foreach=False, fused=False``. Run with the versions pinned in requirements.txt:

    python scripts/torch_fixtures/gen_guard.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import save_numpy, warmup_cosine  # noqa: E402

SEED = 20261201

# (name, shape, group, init scale)
TENSORS = [
    ("w1", [7], 1, 0.5),
    ("b1", [1], 0, 1.0),
    ("w2", [1000], 1, 0.1),
    ("ln", [256], 0, 1.0),
    ("w3", [37, 111], 1, 0.05),
]

# Gradient magnitude per step: some steps clip, some do not.
GRAD_SCALES = [0.02, 3.0, 0.5, 0.001, 10.0, 0.05, 1.0, 0.2, 4.0, 0.01, 0.6, 2.0, 0.03, 7.0]


def make_init_and_grads(steps: int):
    rng = np.random.default_rng(SEED)
    init = {n: (rng.standard_normal(s) * sc).astype(np.float32) for n, s, _g, sc in TENSORS}
    grads = []
    for step in range(steps):
        scale = GRAD_SCALES[step % len(GRAD_SCALES)]
        grads.append({n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s, _g, _sc in TENSORS})
    return init, grads


def run_case(case: dict, steps: int):
    torch.manual_seed(0)
    init, grads = make_init_and_grads(steps)
    lrs = warmup_cosine(steps, peak=1e-2, floor=1e-3, warmup=3)
    params = {n: torch.nn.Parameter(torch.from_numpy(init[n].copy())) for n, *_ in TENSORS}
    groups_meta = case["groups"]
    param_groups = []
    for g, meta in enumerate(groups_meta):
        group = {"params": [params[n] for n, _s, gg, _sc in TENSORS if gg == g], "weight_decay": meta["weight_decay"]}
        if "betas" in meta:
            group["betas"] = tuple(meta["betas"])
        if "momentum" in meta:
            group["momentum"] = meta["momentum"]
        param_groups.append(group)
    opt_cls = {"AdamW": torch.optim.AdamW, "SGD": torch.optim.SGD}[case["optimizer"]]
    opt = opt_cls(param_groups, lr=lrs[0], foreach=False, fused=False, **case["config"])
    guard = case["guard"]
    scaler = None
    if guard.get("loss_scale"):
        ls = guard["loss_scale"]
        scaler = torch.amp.GradScaler(
            "cpu",
            init_scale=ls["init_scale"],
            growth_factor=ls["growth_factor"],
            backoff_factor=ls["backoff_factor"],
            growth_interval=ls["growth_interval"],
        )
        # Scaling a loss is what creates the scaler's scale tensor.
        scaler.scale(torch.zeros((), dtype=torch.float32))
    out = {f"init.{n}": init[n] for n in init}
    norms, scales, found = [], [], []
    poison = {int(k): v for k, v in guard.get("poison", {}).items()}
    for step in range(1, steps + 1):
        for g, meta in zip(opt.param_groups, groups_meta):
            g["lr"] = lrs[step - 1] * meta["lr_scale"]
        scale = float(scaler.get_scale()) if scaler else 1.0
        scales.append(scale)
        for n, *_ in TENSORS:
            g = torch.from_numpy(grads[step - 1][n].copy())
            if scaler:
                # What the backward pass of a loss multiplied by the scale leaves in .grad.
                g = g * torch.tensor(scale, dtype=torch.float32)
            if step in poison and poison[step][0] == n:
                g.view(-1)[0] = float(poison[step][1])
            out[f"grad.{step}.{n}"] = g.numpy().copy()
            params[n].grad = g
        if scaler:
            scaler.unscale_(opt)
        norm = 0.0
        if guard.get("max_grad_norm") is not None:
            norm_type = float("inf") if guard["norm_type"] == "inf" else 2.0
            norm = float(torch.nn.utils.clip_grad_norm_(
                [params[n] for n, *_ in TENSORS], guard["max_grad_norm"], norm_type=norm_type, foreach=False))
        if guard.get("clip_value") is not None:
            torch.nn.utils.clip_grad_value_([params[n] for n, *_ in TENSORS], guard["clip_value"], foreach=False)
        # JSON has no inf or NaN: a non-finite norm (an overflowed step) is written as null.
        norms.append(norm if math.isfinite(norm) else None)
        if scaler:
            found_inf = sum(v.item() for v in scaler._found_inf_per_device(opt).values())
            found.append(int(found_inf != 0))
            scaler.step(opt)
            scaler.update()
        else:
            found.append(0)
            opt.step()
        for n, *_ in TENSORS:
            out[f"param.{step}.{n}"] = params[n].detach().numpy().copy()
    if scaler:
        scales.append(float(scaler.get_scale()))
    for n, *_ in TENSORS:
        for key, value in opt.state[params[n]].items():
            if key != "step":
                out[f"state.{key}.{n}"] = value.numpy().copy()
    meta = {
        "tensors": json.dumps([{"name": n, "shape": s, "group": g} for n, s, g, _sc in TENSORS]),
        "groups": json.dumps(groups_meta),
        "lrs": json.dumps(lrs),
        "optimizer": case["optimizer"],
        "config": json.dumps(case["config"]),
        "guard": json.dumps(guard),
        "norms": json.dumps(norms),
        "scales": json.dumps(scales),
        "found_inf": json.dumps(found),
        "steps": str(steps),
        "generator": json.dumps({
            "torch": torch.__version__,
            "numpy": np.__version__,
            "safetensors": importlib.metadata.version("safetensors"),
        }),
    }
    return out, meta


CASES = {
    # AdamW with clip_grad_norm_ (2-norm) and two groups: biases and norm weights without decay, the rest
    # with a 2x learning rate, its own decay and its own betas.
    "adamw_clip_groups": {
        "optimizer": "AdamW",
        "config": {"eps": 1e-8},
        "groups": [
            {"lr_scale": 1.0, "weight_decay": 0.0, "betas": [0.9, 0.999]},
            {"lr_scale": 2.0, "weight_decay": 0.05, "betas": [0.8, 0.99]},
        ],
        "guard": {"max_grad_norm": 1.0, "norm_type": "2"},
    },
    # SGD with momentum, clip_grad_norm_ by the inf-norm, per-group momentum.
    "sgd_clip_inf": {
        "optimizer": "SGD",
        "config": {"nesterov": False},
        "groups": [
            {"lr_scale": 1.0, "weight_decay": 0.0, "momentum": 0.9},
            {"lr_scale": 0.5, "weight_decay": 1e-3, "momentum": 0.5},
        ],
        "guard": {"max_grad_norm": 0.5, "norm_type": "inf"},
    },
    # SGD with clip_grad_value_.
    "sgd_clip_value": {
        "optimizer": "SGD",
        "config": {"momentum": 0.9},
        "groups": [
            {"lr_scale": 1.0, "weight_decay": 0.0},
            {"lr_scale": 1.0, "weight_decay": 0.0},
        ],
        "guard": {"clip_value": 0.05},
    },
    # AdamW under a GradScaler (growth every 3 clean steps so the scale moves both ways within the run),
    # with an inf at steps 2 and 7, a NaN at step 8 and an inf at 12, then unscale_ and clip_grad_norm_.
    "adamw_grad_scaler": {
        "optimizer": "AdamW",
        "config": {},
        "groups": [
            {"lr_scale": 1.0, "weight_decay": 0.0, "betas": [0.9, 0.999]},
            {"lr_scale": 1.0, "weight_decay": 0.01, "betas": [0.9, 0.999]},
        ],
        "guard": {
            "max_grad_norm": 1.0,
            "norm_type": "2",
            "loss_scale": {"init_scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3},
            "poison": {"2": ["w2", "inf"], "7": ["w3", "-inf"], "8": ["b1", "nan"], "12": ["ln", "inf"]},
        },
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[2]
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "torch_guard")
    parser.add_argument("--steps", type=int, default=14)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        tensors, meta = run_case(case, args.steps)
        save_numpy(tensors, str(args.out / f"{name}.safetensors"), meta)
        print(f"{name}: found_inf={meta['found_inf']} scales={meta['scales']}")


if __name__ == "__main__":
    main()
