#!/usr/bin/env python3
"""Golden fixtures for mixed-precision training with f32 master weights:
16-bit (bfloat16 or float16) model parameters and gradients, an f32 master copy
stepped by torch.optim.AdamW, and the 16-bit copy refreshed from the master
after every step.

Per step s = 1..=N of each case:

    master.grad = grad16.float()          # exact upcast of the 16-bit gradient
    AdamW(master).step()                  # foreach=False, fused=False, f32 on the CPU
    param16 = master.to(dtype16)          # round to nearest even

The masters start as ``param16_init.float()``. Writes, under
tests/fixtures/mixed_precision/ (or --out), one ``<case>.safetensors`` per dtype:

* ``init.<name>``: the initial 16-bit parameters (dtype BF16 or F16);
* ``grad.<s>.<name>``: the 16-bit gradients of step s;
* ``master.<s>.<name>``: the f32 masters after step s;
* ``param.<s>.<name>``: the 16-bit parameters after step s;

with metadata ``dtype`` ("bf16" or "f16"), ``tensors`` (name, shape), ``lrs``
(the learning rate of every step), ``config`` (AdamW's other hyperparameters),
``reference`` and ``generator``. The output is deterministic (fixed seed, one
thread, a writer with a stable header).

Run with the versions pinned in requirements.txt:

    python scripts/precision_fixtures/gen_mixed_precision.py
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

STEPS = 10
SEED = 20261202

# (name, shape, init scale, gradient scale)
TENSORS = [
    ("a", [1], 1.0, 1e-3),
    ("b", [7], 0.5, 10.0),
    ("c", [16, 16], 0.1, 1.0),
    ("d", [1000], 1.0, 1e-2),
    ("e", [4099], 0.05, 0.3),
]

CONFIG = dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2)

CASES = {"bf16": torch.bfloat16, "f16": torch.float16}
SAFETENSORS_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write tensors (f32, bf16 or f16) to a safetensors file with a reproducible
    header (sorted metadata and names, space padding), then read it back to check
    every bit."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        width = {torch.float32: torch.int32}.get(t.dtype, torch.int16)
        data = t.view(width).numpy().astype("<i4" if width == torch.int32 else "<i2").tobytes()
        header[name] = {
            "dtype": SAFETENSORS_DTYPE[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for data in chunks:
            f.write(data)
    back = load_file(str(path))
    for name, t in tensors.items():
        width = {torch.float32: torch.int32}.get(t.dtype, torch.int16)
        if back[name].dtype != t.dtype or not torch.equal(back[name].view(width), t.contiguous().view(width)):
            raise RuntimeError(f"{path}: {name} did not read back")


def learning_rates(steps: int) -> list[float]:
    """Warmup over 3 steps to 1e-2, then cosine decay to 1e-3."""
    peak, floor, warmup = 1e-2, 1e-3, 3
    lrs = []
    for s in range(1, steps + 1):
        if s <= warmup:
            lrs.append(peak * s / warmup)
        else:
            progress = (s - warmup) / (steps - warmup)
            lrs.append(floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress)))
    return lrs


def run_case(dtype: torch.dtype, lrs: list[float]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    out = {}
    params16 = {}
    masters = {}
    for name, shape, iscale, _ in TENSORS:
        params16[name] = (torch.randn(shape, generator=gen) * iscale).to(dtype)
        masters[name] = torch.nn.Parameter(params16[name].float())
        out[f"init.{name}"] = params16[name].clone()
    opt = torch.optim.AdamW(
        [masters[name] for name, *_ in TENSORS],
        lr=lrs[0],
        betas=tuple(CONFIG["betas"]),
        eps=CONFIG["eps"],
        weight_decay=CONFIG["weight_decay"],
        foreach=False,
        fused=False,
    )
    for s, lr in enumerate(lrs, start=1):
        for name, shape, _, gscale in TENSORS:
            grad16 = (torch.randn(shape, generator=gen) * gscale).to(dtype)
            if s == 2:
                # Gradients exactly zero at one element of every tensor.
                grad16.view(-1)[0] = 0.0
            out[f"grad.{s}.{name}"] = grad16
            masters[name].grad = grad16.float()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        with torch.no_grad():
            for name, *_ in TENSORS:
                params16[name] = masters[name].detach().to(dtype)
                out[f"master.{s}.{name}"] = masters[name].detach().clone()
                out[f"param.{s}.{name}"] = params16[name].clone()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[2]
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "mixed_precision")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    version = torch.__version__.split("+")[0]
    lrs = learning_rates(STEPS)
    for case, dtype in CASES.items():
        meta = {
            "dtype": case,
            "tensors": json.dumps([{"name": n, "shape": s} for n, s, *_ in TENSORS]),
            "lrs": json.dumps(lrs),
            "config": json.dumps(CONFIG),
            "reference": f"torch=={version} torch.optim.AdamW(foreach=False, fused=False) on f32 masters, "
            f"grads {case} .float(), params master.to(torch.{str(dtype).split('.')[-1]})",
            "generator": f"scripts/precision_fixtures/gen_mixed_precision.py torch=={version} numpy=={np.__version__}",
        }
        save_file(run_case(dtype, lrs), args.out / f"{case}.safetensors", meta)
        print(f"wrote {case}")


if __name__ == "__main__":
    main()
