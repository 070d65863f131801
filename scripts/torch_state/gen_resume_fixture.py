#!/usr/bin/env python3
"""Writes tests/fixtures/torch_resume/: a PyTorch AdamW run stopped at step K and converted to a wgoptim
checkpoint, and PyTorch's continuation, so that a Rust test can resume the run on the GPU and follow it.

    checkpoint.safetensors    convert.torch_to_checkpoint of the run after K steps
    continuation.safetensors  grad.<step>.<name> for steps K+1..K+M (the fixed gradients),
                              param.<step>.<name> after each of those steps, and the final
                              exp_avg.<name> / exp_avg_sq.<name>; metadata: `k`, `m`, `lrs` (JSON: the
                              base learning rate of steps K+1..K+M; group g steps with lrs[i] * scale_g)

Two parameter groups: weights with weight decay 0.05 at the base rate, biases without decay at half of it
and with betas of their own.
Torch runs on the CPU in float32 with `foreach=False, fused=False` (its single-tensor path, the one the
kernels follow). Regenerate only when the fixture changes, then commit the files:

    python -m venv .venv && .venv/bin/pip install -r scripts/torch_state/requirements.txt
    .venv/bin/python scripts/torch_state/gen_resume_fixture.py
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import convert  # noqa: E402

OUT = HERE.parent.parent / "tests" / "fixtures" / "torch_resume"
K = 6
M = 6
SHAPES = [("fc1.weight", (24, 10)), ("fc1.bias", (24,)), ("fc2.weight", (5, 24)), ("fc2.bias", (5,))]


def lr_at(step):
    """A base learning rate that changes every step, as a schedule would."""
    return 1e-2 * (1.0 + 0.5 * math.sin(0.7 * step))


def main():
    torch.manual_seed(20261201)
    params = [torch.nn.Parameter(torch.randn(shape, dtype=torch.float32) * 0.5) for _, shape in SHAPES]
    grads = {s: [torch.randn(p.shape, dtype=torch.float32) * (0.1 + s % 3) for p in params] for s in range(1, K + M + 1)}
    weights = [p for (n, _), p in zip(SHAPES, params) if n.endswith("weight")]
    biases = [p for (n, _), p in zip(SHAPES, params) if n.endswith("bias")]
    # The optimizer's flattened parameter order: group 0's, then group 1's.
    order = [n for n, _ in SHAPES if n.endswith("weight")] + [n for n, _ in SHAPES if n.endswith("bias")]
    by_name = {n: p for (n, _), p in zip(SHAPES, params)}
    scales = [1.0, 0.5]
    opt = torch.optim.AdamW(
        [
            {"params": weights, "weight_decay": 0.05},
            {"params": biases, "weight_decay": 0.0, "betas": (0.8, 0.95)},
        ],
        lr=lr_at(1),
        betas=(0.9, 0.99),
        eps=1e-8,
        foreach=False,
        fused=False,
    )

    def step(s):
        for g, scale in zip(opt.param_groups, scales):
            g["lr"] = lr_at(s) * scale
        for p, g in zip(params, grads[s]):
            p.grad = g.clone()
        opt.step()

    for s in range(1, K + 1):
        step(s)
    OUT.mkdir(parents=True, exist_ok=True)
    # Converted with the base rate of the last step taken; the continuation sets its own rates.
    convert.torch_to_checkpoint([(n, by_name[n]) for n in order], opt.state_dict(), str(OUT / "checkpoint.safetensors"))

    entries = {}
    for s in range(K + 1, K + M + 1):
        for (n, _), g in zip(SHAPES, grads[s]):
            entries[f"grad.{s}.{n}"] = g.numpy()
        step(s)
        for n, p in by_name.items():
            entries[f"param.{s}.{n}"] = p.detach().numpy().copy()
    for n, p in by_name.items():
        for k in ("exp_avg", "exp_avg_sq"):
            entries[f"{k}.{n}"] = opt.state[p][k].numpy().copy()
    meta = {"k": str(K), "m": str(M), "lrs": json.dumps([lr_at(s) for s in range(K + 1, K + M + 1)])}
    save_file({k: np.ascontiguousarray(v, dtype="<f4") for k, v in entries.items()}, str(OUT / "continuation.safetensors"), metadata=meta)
    print(f"wrote {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    main()
