#!/usr/bin/env python3
"""Golden fixtures for 16-bit parameters stepped without an f32 master copy:
torch-optimi's ``AdamW``, ``Lion``, ``SGD`` and ``StableAdamW`` on bfloat16 tensors with
``kahan_sum=True``.

Every case runs on the same inputs, written to
``tests/fixtures/optimi_kahan/inputs.safetensors``: four bf16 tensors
``init.<name>`` in two parameter groups (group 0 decays, group 1 does not) and
bf16 gradients ``grad.<step>.<name>`` for STEPS steps (see TENSORS for their sizes) (optimi keeps a bf16
parameter's gradient, state and compensation in bf16). The metadata ``lrs``
holds the learning rate of every step, ``tensors`` the names, shapes and groups.

Each optimizer config is run three times, written to
``tests/fixtures/optimi_kahan/<case>.safetensors``:

* ``<case>``: bf16 parameters, ``kahan_sum=True`` (the trajectory wgoptim
  reproduces): ``param.<step>.<name>`` (BF16) after every step and the state
  after the last step ``state.<key>.<name>`` (BF16, ``kahan_comp`` included);
* ``<case>_plain``: bf16 parameters, ``kahan_sum=False`` (plain bf16 rounding
  of every update): the same keys without ``kahan_comp``;
* ``<case>_f32``: the same run on f32 copies of the inputs (F32): the
  trajectory the 16-bit runs approximate, to measure how far each one drifts.

Metadata: ``optimizer`` (adamw, lion, sgd, stable_adamw), ``config`` (the optimi keyword
arguments), ``groups`` (per group its weight decay), ``kahan`` and
``reference``. The references run on the CPU on one thread with
``foreach=False, triton=False`` (optimi's single-tensor path): on several
threads torch's vectorised ``add_(alpha=...)`` rounds ``alpha`` to bf16 in the
vector body and not in a thread's scalar tail, so the result would depend on
the thread count. Run with the versions pinned in requirements.txt:

    python scripts/torch_fixtures/gen_kahan.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, write_safetensors  # noqa: E402

SEED = 20261202
STEPS = 30
# name, shape, group. Every size is a multiple of 64: torch's vectorised CPU loop steps bf16 tensors 64
# elements at a time (2 x 32 on AVX-512) and finishes a remainder with scalar code, which for
# `add_(t, alpha=a)` rounds the product a*t to bf16 before the addition where the vector body does not; with
# no remainder every element is computed the same way (odd lengths are checked against the CPU oracle).
TENSORS = [
    ("w1", [32, 64], 0),
    ("b1", [64], 1),
    ("w2", [12, 16], 0),
    ("norm", [320], 1),
]

# name -> (optimizer, optimi keyword arguments, base lr, weight decay of group 0). Group 1 never decays.
# The learning rates keep most updates below half a bf16 ulp of the parameters, where plain bf16 rounding
# loses them and the compensation does not.
CASES = {
    "adamw": ("adamw", dict(betas=(0.9, 0.99), eps=1e-6), 1e-3, 1e-2),
    "adamw_betas_eps": ("adamw", dict(betas=(0.8, 0.95), eps=1e-8), 3e-4, 0.1),
    "lion": ("lion", dict(betas=(0.9, 0.99)), 3e-4, 0.1),
    "sgd_momentum": ("sgd", dict(momentum=0.9), 2e-3, 1e-3),
    "sgd_no_momentum": ("sgd", dict(momentum=0.0), 2e-2, 0.0),
    "stable_adamw": ("stable_adamw", dict(betas=(0.9, 0.99), eps=1e-6), 1e-3, 1e-2),
}


def lrs_for(base: float) -> list[float]:
    """A warmup of 5 steps, then cosine decay to a tenth: the lr changes every step."""
    out = []
    for s in range(STEPS):
        if s < 5:
            out.append(base * (s + 1) / 5)
        else:
            t = (s - 5) / (STEPS - 5)
            out.append(base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))))
    return out


def make_inputs():
    g = torch.Generator().manual_seed(SEED)
    init = {}
    grads = [dict() for _ in range(STEPS)]
    for name, shape, _group in TENSORS:
        init[name] = (torch.randn(shape, generator=g) * 0.5).to(torch.bfloat16)
        scale = 0.05 if name.startswith("w") else 0.01
        for s in range(STEPS):
            grads[s][name] = (torch.randn(shape, generator=g) * scale).to(torch.bfloat16)
        # A few exact zeros, so sign(0) and zero updates are covered.
        for s in range(0, STEPS, 7):
            grads[s][name].view(-1)[::17] = 0
    return init, grads


def bf16_entry(t: torch.Tensor):
    return ("BF16", list(t.shape), t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes())


def f32_entry(t: torch.Tensor):
    return ("F32", list(t.shape), t.contiguous().numpy().astype("<f4").tobytes())


def build(kind: str, kwargs: dict, params: dict, wd: float, kahan: bool, lr: float):
    import optimi

    groups = [
        {"params": [params[n] for n, _s, gid in TENSORS if gid == 0], "weight_decay": wd},
        {"params": [params[n] for n, _s, gid in TENSORS if gid == 1], "weight_decay": 0.0},
    ]
    common = dict(lr=lr, kahan_sum=kahan, foreach=False, triton=False)
    if kind == "adamw":
        return optimi.AdamW(groups, **kwargs, **common)
    if kind == "lion":
        return optimi.Lion(groups, **kwargs, **common)
    if kind == "sgd":
        return optimi.SGD(groups, **kwargs, **common)
    if kind == "stable_adamw":
        return optimi.StableAdamW(groups, **kwargs, **common)
    raise ValueError(kind)


def run(kind, kwargs, base_lr, wd, init, grads, dtype, kahan):
    params = {n: torch.nn.Parameter(init[n].to(dtype).clone()) for n, _s, _g in TENSORS}
    lrs = lrs_for(base_lr)
    opt = build(kind, kwargs, params, wd, kahan, lrs[0])
    out = {}
    for s in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lrs[s]
        for n, _shape, _g in TENSORS:
            params[n].grad = grads[s][n].to(dtype).clone()
        opt.step()
        for n, _shape, _g in TENSORS:
            out[f"param.{s + 1}.{n}"] = params[n].detach().clone()
    for n, _shape, _g in TENSORS:
        for key, value in opt.state[params[n]].items():
            if isinstance(value, torch.Tensor) and value.shape == params[n].shape:
                out[f"state.{key}.{n}"] = value.detach().clone()
    return out, lrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "optimi_kahan")
    parser.add_argument("--only", nargs="*", help="write only these cases (and the inputs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    versions = pins("torch", "torch-optimi", "numpy")

    init, grads = make_inputs()
    entries = {f"init.{n}": bf16_entry(init[n]) for n, _s, _g in TENSORS}
    for s in range(STEPS):
        for n, _s2, _g in TENSORS:
            entries[f"grad.{s + 1}.{n}"] = bf16_entry(grads[s][n])
    meta = {
        "tensors": json.dumps([[n, s, g] for n, s, g in TENSORS]),
        "steps": str(STEPS),
        "seed": str(SEED),
        "versions": json.dumps(versions),
    }
    write_safetensors(args.out / "inputs.safetensors", entries, meta)

    for case, (kind, kwargs, base_lr, wd) in CASES.items():
        if args.only and case not in args.only:
            continue
        for suffix, dtype, kahan in (("", torch.bfloat16, True), ("_plain", torch.bfloat16, False), ("_f32", torch.float32, False)):
            out, lrs = run(kind, kwargs, base_lr, wd, init, grads, dtype, kahan)
            if kahan and not any(k.startswith("state.kahan_comp.") for k in out):
                raise RuntimeError(f"{case}: optimi kept no compensation buffer")
            make = bf16_entry if dtype == torch.bfloat16 else f32_entry
            config = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
            write_safetensors(
                args.out / f"{case}{suffix}.safetensors",
                {k: make(v) for k, v in out.items()},
                {
                    "optimizer": kind,
                    "config": json.dumps(config),
                    "groups": json.dumps([{"weight_decay": wd}, {"weight_decay": 0.0}]),
                    "lrs": json.dumps(lrs),
                    "kahan": json.dumps(kahan),
                    "dtype": "bf16" if dtype == torch.bfloat16 else "f32",
                    "reference": f"optimi.{ {'adamw': 'AdamW', 'lion': 'Lion', 'sgd': 'SGD', 'stable_adamw': 'StableAdamW'}[kind] }(kahan_sum={kahan}, foreach=False, triton=False) on {dtype}, one CPU thread",
                    "versions": json.dumps(versions),
                },
            )
            print(f"{case}{suffix}: {len(out)} tensors")


if __name__ == "__main__":
    main()
