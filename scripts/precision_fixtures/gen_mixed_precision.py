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
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, version, warmup_cosine, write_safetensors  # noqa: E402

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
    """Write tensors (f32, bf16 or f16) with the shared reproducible writer, then
    read the file back with safetensors' torch loader to check every bit (numpy
    has no bfloat16, so the shared numpy check cannot)."""

    def bits(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int16)

    write_safetensors(
        path,
        {
            name: (SAFETENSORS_DTYPE[t.dtype], list(t.shape), bits(t).numpy().astype("<i4" if t.dtype == torch.float32 else "<i2").tobytes())
            for name, t in tensors.items()
        },
        metadata,
    )
    back = load_file(str(path))
    for name, t in tensors.items():
        if back[name].dtype != t.dtype or not torch.equal(bits(back[name]), bits(t)):
            raise RuntimeError(f"{path}: {name} did not read back")


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
    torch_version = version("torch", local=False)
    lrs = warmup_cosine(STEPS, peak=1e-2, floor=1e-3, warmup=3)
    for case, dtype in CASES.items():
        meta = {
            "dtype": case,
            "tensors": json.dumps([{"name": n, "shape": s} for n, s, *_ in TENSORS]),
            "lrs": json.dumps(lrs),
            "config": json.dumps(CONFIG),
            "reference": f"torch=={torch_version} torch.optim.AdamW(foreach=False, fused=False) on f32 masters, "
            f"grads {case} .float(), params master.to(torch.{str(dtype).split('.')[-1]})",
            "generator": f"scripts/precision_fixtures/gen_mixed_precision.py {pins('torch', 'numpy', local=False)}",
        }
        save_file(run_case(dtype, lrs), args.out / f"{case}.safetensors", meta)
        print(f"wrote {case}")


if __name__ == "__main__":
    main()
