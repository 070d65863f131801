#!/usr/bin/env python3
"""Golden fixtures for the torch.optim optimizers (AdamW, Adam, SGD).

Writes, under tests/fixtures/torch_optim/ (or --out):

* ``inputs.safetensors``: the initial parameters ``init.<name>``, the gradients
  ``grad.<step>.<name>`` for step 1..=N, and metadata: ``tensors`` (name, shape,
  group), ``lrs`` (the base learning rate of every step), ``steps`` and
  ``generator`` (the versions used).
* ``<case>.safetensors`` for every case below: the parameters after every step
  ``param.<step>.<name>`` and the optimizer state after the last step
  ``state.<torch state key>.<name>``, with metadata ``optimizer``, ``config``
  (hyperparameters except lr), ``groups`` (per group ``lr_scale`` and
  ``weight_decay``) and ``reference``.

At step s every param group's lr is ``lrs[s - 1] * lr_scale``. torch runs on the
CPU in float32 with ``foreach=False, fused=False`` (the single-tensor path).

The output is deterministic on one machine: fixed seeds, one thread, and a
safetensors writer with a stable header. Across machines the inputs and the SGD
cases are stable; the Adam cases may differ in the last bits, because torch's
float32 CPU sqrt comes from a vector math library that is not correctly rounded
and whose results depend on the CPU.

Run with the versions pinned in requirements.txt:

    python scripts/torch_fixtures/gen_torch_optim.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import safetensors
import torch
from safetensors.numpy import load_file

STEPS = 24
SEED = 20240611

# (name, shape, group, gradient scale, init scale)
TENSORS = [
    ("a", [1], 0, 1e-3, 1.0),
    ("b", [7], 1, 10.0, 0.5),
    ("c", [256], 0, 1.0, 0.1),
    ("d", [1000], 1, 1e-2, 1.0),
    ("e", [1283], 0, 0.3, 0.05),
    ("f", [19, 41], 1, 100.0, 0.02),
]

# Fraction of gradient elements forced to exactly zero.
ZERO_FRACTION = 0.03


def save_file(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str]) -> None:
    """Write a safetensors file byte-for-byte reproducibly.

    safetensors' own writer orders ``__metadata__`` by hash, so two runs differ
    in their header bytes. This writer sorts the metadata keys and tensor names,
    pads the header with spaces to a multiple of 8 as the format allows, and
    checks the result by reading it back with the safetensors package.
    """
    header = {"__metadata__": dict(sorted(metadata.items()))}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype=np.float32)
        data = arr.astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
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
    back = load_file(path)
    if sorted(back) != sorted(tensors):
        raise RuntimeError(f"{path}: tensors did not read back")
    for name, arr in tensors.items():
        if not np.array_equal(back[name], arr.astype(np.float32)) or back[name].shape != arr.shape:
            raise RuntimeError(f"{path}: {name} did not read back")


def learning_rates(steps: int) -> list[float]:
    """Linear warmup over 4 steps to 1e-2, then cosine decay down to 1e-3."""
    peak, floor, warmup = 1e-2, 1e-3, 4
    lrs = []
    for s in range(1, steps + 1):
        if s <= warmup:
            lrs.append(peak * s / warmup)
        else:
            progress = (s - warmup) / (steps - warmup)
            lrs.append(floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress)))
    return lrs


def make_inputs():
    rng = np.random.default_rng(SEED)
    init = {}
    grads = [dict() for _ in range(STEPS)]
    for name, shape, _group, gscale, iscale in TENSORS:
        init[name] = (rng.standard_normal(shape) * iscale).astype(np.float32)
        for s in range(STEPS):
            g = (rng.standard_normal(shape) * gscale).astype(np.float32)
            zero = rng.random(shape) < ZERO_FRACTION
            g[zero] = 0.0
            grads[s][name] = g
    # A few deterministic exact zeros as well: the first element of every
    # tensor at step 3, and the whole single-element tensor at step 5.
    for name, *_ in TENSORS:
        grads[2][name].reshape(-1)[0] = 0.0
    grads[4]["a"][...] = 0.0
    return init, grads


# name -> (optimizer, config, groups or None)
# groups: list indexed by group id of (lr_scale, weight_decay); None means every
# group uses lr_scale 1 and the case's weight_decay.
CASES = {
    "adamw_default": ("adamw", dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2), None),
    "adamw_betas": ("adamw", dict(betas=[0.8, 0.95], eps=1e-6, weight_decay=0.1), None),
    "adamw_amsgrad": (
        "adamw",
        dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2, amsgrad=True),
        None,
    ),
    "adamw_maximize": (
        "adamw",
        dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2, maximize=True),
        None,
    ),
    "adamw_groups": (
        "adamw",
        dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2),
        [(1.0, 0.1), (2.0, 0.0)],
    ),
    "adam_default": ("adam", dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0), None),
    "adam_l2": ("adam", dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2), None),
    "adam_amsgrad": (
        "adam",
        dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2, amsgrad=True),
        None,
    ),
    "sgd_plain": ("sgd", dict(momentum=0.0), None),
    "sgd_momentum": ("sgd", dict(momentum=0.9), None),
    "sgd_dampening": ("sgd", dict(momentum=0.9, dampening=0.3), None),
    "sgd_nesterov": ("sgd", dict(momentum=0.9, nesterov=True), None),
    "sgd_wd_maximize": ("sgd", dict(momentum=0.9, weight_decay=1e-3, maximize=True), None),
    "sgd_groups": ("sgd", dict(momentum=0.9, weight_decay=1e-2), [(1.0, 1e-2), (0.5, 0.0)]),
}

ADAM_DEFAULTS = dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False)
ADAMW_DEFAULTS = dict(ADAM_DEFAULTS, weight_decay=1e-2)
SGD_DEFAULTS = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)


def full_config(optimizer: str, overrides: dict) -> dict:
    base = {"adamw": ADAMW_DEFAULTS, "adam": ADAM_DEFAULTS, "sgd": SGD_DEFAULTS}[optimizer]
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown {optimizer} options: {sorted(unknown)}")
    return dict(base, **overrides)


def build_optimizer(optimizer: str, torch_groups: list[dict], cfg: dict):
    common = dict(foreach=False, fused=False, maximize=cfg["maximize"])
    if optimizer in ("adam", "adamw"):
        cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
        return cls(
            torch_groups,
            lr=1.0,
            betas=tuple(cfg["betas"]),
            eps=cfg["eps"],
            weight_decay=cfg["weight_decay"],
            amsgrad=cfg["amsgrad"],
            **common,
        )
    if optimizer == "sgd":
        return torch.optim.SGD(
            torch_groups,
            lr=1.0,
            momentum=cfg["momentum"],
            dampening=cfg["dampening"],
            weight_decay=cfg["weight_decay"],
            nesterov=cfg["nesterov"],
            **common,
        )
    raise ValueError(optimizer)


def reference_string(optimizer: str) -> str:
    cls = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}[optimizer]
    return f"torch=={torch.__version__.split('+')[0]} torch.optim.{cls}(foreach=False, fused=False)"


def run_case(name, optimizer, overrides, groups, init, grads, lrs):
    cfg = full_config(optimizer, overrides)
    n_groups = 1 + max(t[2] for t in TENSORS)
    if groups is None:
        groups = [(1.0, cfg["weight_decay"])] * n_groups
    if len(groups) != n_groups:
        raise ValueError(f"{name}: expected {n_groups} groups")

    params = {
        t[0]: torch.nn.Parameter(torch.from_numpy(init[t[0]].copy())) for t in TENSORS
    }
    torch_groups = [
        {
            "params": [params[t[0]] for t in TENSORS if t[2] == gid],
            "weight_decay": wd,
        }
        for gid, (_scale, wd) in enumerate(groups)
    ]
    opt = build_optimizer(optimizer, torch_groups, cfg)

    out = {}
    for step in range(1, STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for tname, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][tname].copy())
        opt.step()
        for tname, p in params.items():
            out[f"param.{step}.{tname}"] = p.detach().numpy().copy()

    for tname, p in params.items():
        for key, value in opt.state[p].items():
            if key == "step" or value is None:
                continue
            out[f"state.{key}.{tname}"] = value.detach().numpy().copy()

    config = {k: v for k, v in cfg.items()}
    metadata = {
        "optimizer": optimizer,
        "config": json.dumps(config),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "reference": reference_string(optimizer),
    }
    return out, metadata


def generator_string() -> str:
    return (
        f"gen_torch_optim.py python=={sys.version.split()[0]} "
        f"torch=={torch.__version__} numpy=={np.__version__} "
        f"safetensors=={safetensors.__version__}"
    )


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "torch_optim")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    init, grads = make_inputs()
    lrs = learning_rates(STEPS)

    tensors = {f"init.{n}": init[n] for n, *_ in TENSORS}
    for s in range(STEPS):
        for n, *_ in TENSORS:
            tensors[f"grad.{s + 1}.{n}"] = grads[s][n]
    save_file(
        tensors,
        str(args.out / "inputs.safetensors"),
        metadata={
            "tensors": json.dumps([{"name": n, "shape": shape, "group": g} for n, shape, g, *_ in TENSORS]),
            "lrs": json.dumps(lrs),
            "steps": str(STEPS),
            "generator": generator_string(),
        },
    )

    for case, (optimizer, overrides, groups) in CASES.items():
        out, metadata = run_case(case, optimizer, overrides, groups, init, grads, lrs)
        save_file(out, str(args.out / f"{case}.safetensors"), metadata=metadata)
        print(f"wrote {case}: {len(out)} tensors")


if __name__ == "__main__":
    main()
