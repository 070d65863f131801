#!/usr/bin/env python3
"""Golden fixtures for Adafactor: transformers' ``transformers.optimization.Adafactor``
and, where its rule agrees, timm's ``timm.optim.Adafactor``.

The inputs are not stored: every initial parameter and gradient comes from a
32-bit integer hash of (seed, element index) that ``crates/wgoptim-reference``
reproduces bit for bit (``adafactor::fixture_values``), so the large matrix's
case costs only its recorded parameters. A value is
``((x >> 8) / 2**24 - 0.5) * scale`` with ``scale`` a power of two (exact in
f32); a gradient element is 0 where ``x & 15 == 0``. The seed of tensor ``t``
(its index in the case's tensor list) is ``t`` for its initial value and
``1000 * step + t`` for its gradient at ``step``.

Each case writes ``tests/fixtures/transformers_adafactor/<case>.safetensors``
with ``param.<step>.<name>`` after every step listed in the metadata
``recorded``, ``state.<key>.<name>`` after the last step (transformers' keys:
``exp_avg_sq_row`` and ``exp_avg_sq_col`` for a tensor of two or more
dimensions, ``exp_avg_sq`` for a vector, ``exp_avg`` with ``beta1``), and
metadata: ``reference``, ``generator``, ``tensors`` (name, shape, group,
init_scale, grad_scale), ``config`` (the reference's constructor arguments),
``groups`` (per group ``lr_scale`` and ``weight_decay``), ``lrs`` (the base lr
of every step; ``null`` for a relative step) and ``steps``. At step s a group's
lr is ``lrs[s - 1] * lr_scale``.

Both references run on the CPU in float32 with one thread. Run with the
versions pinned in requirements.txt and requirements-nodeps.txt:

    python scripts/torch_fixtures/gen_adafactor.py
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, warmup_cosine  # noqa: E402

MASK = 0xFFFFFFFF

# (name, shape, group, init scale, gradient scale): a batch of three 5 x 7 matrices, matrices of odd shapes
# (one wider than a 64-column tile, one taller than a 64-row tile, one with a single row) and a vector.
SMALL = [
    ("w3d", [3, 5, 7], 0, 1.0, 0.25),
    ("tall", [37, 10], 0, 0.5, 1.0),
    ("wide", [9, 70], 1, 2.0, 0.125),
    ("long", [130, 3], 0, 1.0, 0.5),
    ("row1", [1, 19], 1, 0.25, 1.0),
    ("bias", [33], 1, 0.0625, 0.5),
]

# More than 1,024 blocks of 256 elements, so the parameter and update norms cross reduction segments, and
# 9 x 9 tiles of the row and column sums.
LARGE = [
    ("big", [520, 530], 0, 1.0, 0.5),
    ("vec", [300], 0, 0.5, 1.0),
]

# Shapes where timm factors exactly as transformers does: both of the last two dimensions above timm's
# min_dim_size_to_factor (16), and the first dimension of the 3-D tensor at most 16.
TIMM = [
    ("a", [37, 20], 0, 1.0, 0.5),
    ("b", [24, 70], 1, 0.5, 1.0),
    ("c", [3, 20, 24], 0, 1.0, 0.25),
    ("bias", [33], 1, 0.0625, 0.5),
]

STEPS = 10
SCHEDULE = warmup_cosine(STEPS, 1e-2, 1e-3, 3)

TRANSFORMERS_DEFAULTS = dict(
    lr=None,
    eps=[1e-30, 1e-3],
    clip_threshold=1.0,
    decay_rate=-0.8,
    beta1=None,
    weight_decay=0.0,
    scale_parameter=True,
    relative_step=True,
    warmup_init=False,
)

# name -> (reference, tensors, config overrides, groups as (lr_scale, weight_decay), base lrs or None
#          for a relative step, steps, recorded steps or None for all)
CASES = {
    "default": ("transformers", SMALL, dict(), [(1.0, 0.0), (1.0, 0.0)], None, STEPS, None),
    "explicit_lr": (
        "transformers",
        SMALL,
        dict(relative_step=False, scale_parameter=False),
        [(1.0, 0.0), (0.5, 0.0)],
        SCHEDULE,
        STEPS,
        None,
    ),
    "explicit_lr_scaled": (
        "transformers",
        SMALL,
        dict(relative_step=False, beta1=0.8, weight_decay=0.01),
        [(1.0, 0.01), (2.0, 0.0)],
        [1e-2] * STEPS,
        STEPS,
        None,
    ),
    "beta1": ("transformers", SMALL, dict(beta1=0.9), [(1.0, 0.0), (1.0, 0.0)], None, STEPS, None),
    "warmup_init": ("transformers", SMALL, dict(warmup_init=True), [(1.0, 0.0), (1.0, 0.0)], None, STEPS, None),
    "weight_decay": (
        "transformers",
        SMALL,
        dict(weight_decay=0.1, clip_threshold=0.5, decay_rate=-0.6, eps=[1e-30, 1e-2]),
        [(1.0, 0.1), (1.0, 0.0)],
        None,
        STEPS,
        None,
    ),
    "large": ("transformers", LARGE, dict(), [(1.0, 0.0)], None, 3, [3]),
    "timm_default": ("timm", TIMM, dict(), [(1.0, 0.0), (1.0, 0.0)], None, STEPS, None),
    "timm_beta1_decay": (
        "timm",
        TIMM,
        dict(beta1=0.9, weight_decay=0.01),
        [(1.0, 0.01), (1.0, 0.0)],
        None,
        STEPS,
        None,
    ),
    "timm_explicit_lr": (
        "timm",
        TIMM,
        dict(relative_step=False, scale_parameter=False),
        [(1.0, 0.0), (0.5, 0.0)],
        SCHEDULE,
        STEPS,
        None,
    ),
}


def hash_u32(index: np.ndarray, seed: int) -> np.ndarray:
    """A 32-bit integer hash of each index (uint64 arithmetic masked to 32 bits, as u32 wrapping
    arithmetic computes it)."""
    x = (index * 0x9E3779B1 + seed * 0x85EBCA77 + 0x165667B1) & MASK
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & MASK
    x ^= x >> 12
    x = (x * 0x297A2D39) & MASK
    x ^= x >> 15
    return x


def fixture_values(n: int, seed: int, scale: float, zeros: bool) -> np.ndarray:
    x = hash_u32(np.arange(n, dtype=np.uint64), seed)
    u = (x >> np.uint64(8)).astype(np.float32) / np.float32(2**24)
    v = (u - np.float32(0.5)) * np.float32(scale)
    if zeros:
        v[(x & np.uint64(15)) == 0] = 0.0
    return v.astype(np.float32)


def import_timm_adafactor():
    """timm's Adafactor without importing the ``timm`` package (its models need torchvision, which has no
    build for the pinned torch); see ``gen_torch_optim.import_timm_optim``."""
    # Located through its distribution: importing transformers may already have left a `timm` entry
    # without a spec in sys.modules.
    root = Path(str(importlib.metadata.distribution("timm").locate_file("timm")))
    for name, path in (("timm", root), ("timm.optim", root / "optim")):
        if getattr(sys.modules.get(name), "__path__", None) is None:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module
    return importlib.import_module("timm.optim.adafactor").Adafactor


def build(reference: str, torch_groups: list[dict], cfg: dict):
    if reference == "transformers":
        from transformers.optimization import Adafactor

        return Adafactor(
            torch_groups,
            lr=cfg["lr"],
            eps=tuple(cfg["eps"]),
            clip_threshold=cfg["clip_threshold"],
            decay_rate=cfg["decay_rate"],
            beta1=cfg["beta1"],
            weight_decay=cfg["weight_decay"],
            scale_parameter=cfg["scale_parameter"],
            relative_step=cfg["relative_step"],
            warmup_init=cfg["warmup_init"],
        )
    adafactor = import_timm_adafactor()
    return adafactor(
        torch_groups,
        lr=cfg["lr"],
        eps=cfg["eps"][0],
        eps_scale=cfg["eps"][1],
        clip_threshold=cfg["clip_threshold"],
        decay_rate=cfg["decay_rate"],
        betas=None if cfg["beta1"] is None else (cfg["beta1"], 0.999),
        weight_decay=cfg["weight_decay"],
        scale_parameter=cfg["scale_parameter"],
        warmup_init=cfg["warmup_init"],
    )


def run_case(name: str, spec) -> tuple[dict, dict]:
    reference, tensors, overrides, groups, lrs, steps, recorded = spec
    cfg = dict(TRANSFORMERS_DEFAULTS, **overrides)
    relative = cfg["relative_step"]
    if not relative:
        # Both references need an lr without a relative step; it is set per group before every step.
        cfg["lr"] = 1.0
    params = [
        torch.nn.Parameter(torch.from_numpy(fixture_values(int(np.prod(shape)), t, iscale, False)).reshape(shape))
        for t, (_, shape, _, iscale, _) in enumerate(tensors)
    ]
    torch_groups = []
    for g, (scale, wd) in enumerate(groups):
        members = [p for p, (_, _, group, _, _) in zip(params, tensors) if group == g]
        torch_groups.append({"params": members, "weight_decay": wd})
    opt = build(reference, torch_groups, cfg)
    out = {}
    recorded = recorded or list(range(1, steps + 1))
    for s in range(1, steps + 1):
        for t, (p, (_, shape, _, _, gscale)) in enumerate(zip(params, tensors)):
            p.grad = torch.from_numpy(fixture_values(p.numel(), 1000 * s + t, gscale, True)).reshape(shape)
        if not relative:
            for group, (scale, _) in zip(opt.param_groups, groups):
                group["lr"] = lrs[s - 1] * scale
        opt.step()
        if s in recorded:
            for p, (tname, *_rest) in zip(params, tensors):
                out[f"param.{s}.{tname}"] = p.detach().numpy().copy()
    for p, (tname, *_rest) in zip(params, tensors):
        for key, value in opt.state[p].items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                out[f"state.{key}.{tname}"] = value.detach().numpy().copy()
    meta = {
        "reference": pins("torch", reference, local=False) + f" {reference}.Adafactor",
        "generator": "scripts/torch_fixtures/gen_adafactor.py",
        "tensors": json.dumps(
            [
                {"name": n, "shape": shape, "group": g, "init_scale": i, "grad_scale": gs}
                for n, shape, g, i, gs in tensors
            ]
        ),
        "config": json.dumps(cfg),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "lrs": json.dumps(lrs if lrs is not None else [None] * steps),
        "steps": json.dumps(steps),
        "recorded": json.dumps(recorded),
    }
    return out, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests" / "fixtures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    out_dir = args.out / "transformers_adafactor"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in CASES.items():
        tensors, meta = run_case(name, spec)
        save_numpy(tensors, out_dir / f"{name}.safetensors", meta)
        print(f"{name}: {len(tensors)} tensors ({meta['reference']})")


if __name__ == "__main__":
    main()
