#!/usr/bin/env python3
"""Golden fixtures for Lookahead (torch-optimizer's ``torch_optimizer.Lookahead``)
around ``torch.optim.AdamW`` and ``torch.optim.SGD``.

The cases run on the inputs of ``gen_torch_optim.py`` (six tensors in two
parameter groups, 24 steps of gradients and learning rates), rebuilt from that
script's seed and checked against the committed
``tests/fixtures/torch_optim/inputs.safetensors`` bit for bit. Each case
``tests/fixtures/lookahead/<case>.safetensors`` holds the parameters after
every step ``param.<step>.<name>`` and the state after the last step
``state.<key>.<name>``: the inner optimizer's (``exp_avg``, ``exp_avg_sq``, or
``momentum_buffer``) and Lookahead's slow weights (``slow_param``), with
metadata ``optimizer`` (``lookahead``), ``inner`` (``adamw`` or ``sgd``),
``config`` (the inner optimizer's hyperparameters and Lookahead's ``k`` and
``alpha``), ``groups`` (per group ``lr_scale`` and ``weight_decay``),
``counter`` (every group's counter after the last step) and ``reference``. At
step s a group's lr is ``lrs[s - 1] * lr_scale`` with the inputs' ``lrs``.

The optimizers run on the CPU in float32 on their single-tensor paths
(``foreach=False, fused=False``). Run with the versions pinned in
requirements.txt:

    python scripts/torch_fixtures/gen_lookahead.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, warmup_cosine  # noqa: E402
import gen_torch_optim as base  # noqa: E402
from gen_adopt_sf import check_inputs, make_params, snapshot, torch_groups  # noqa: E402

STEPS = base.STEPS

# name -> (inner optimizer, inner config, lookahead (k, alpha), groups as (lr_scale, weight_decay))
CASES = {
    # torch-optimizer's defaults, k = 5 and alpha = 0.5, around AdamW's.
    "lookahead_adamw_default": (
        "adamw",
        dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2),
        (5, 0.5),
        [(1.0, 1e-2), (1.0, 0.0)],
    ),
    # An alpha whose interpolation rounds (0.8 and 0.2 are not exact in binary), and a group at half the lr.
    "lookahead_adamw_k3_alpha08": (
        "adamw",
        dict(betas=[0.8, 0.95], eps=1e-6, weight_decay=0.1),
        (3, 0.8),
        [(1.0, 0.1), (0.5, 0.0)],
    ),
    "lookahead_sgd_momentum": (
        "sgd",
        dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=1e-3, maximize=False),
        (6, 0.3),
        [(1.0, 1e-3), (2.0, 0.0)],
    ),
    # k = 1: every step pulls the weights back.
    "lookahead_sgd_k1": (
        "sgd",
        dict(momentum=0.5, dampening=0.1, nesterov=False, weight_decay=0.0, maximize=False),
        (1, 0.5),
        [(1.0, 0.0), (1.0, 0.0)],
    ),
}


def make_inner(kind, cfg, groups):
    if kind == "adamw":
        return torch.optim.AdamW(
            groups, lr=1.0, betas=tuple(cfg["betas"]), eps=cfg["eps"], foreach=False, fused=False
        )
    return torch.optim.SGD(
        groups,
        lr=1.0,
        momentum=cfg["momentum"],
        dampening=cfg["dampening"],
        nesterov=cfg["nesterov"],
        maximize=cfg["maximize"],
        foreach=False,
        fused=False,
    )


def run_case(kind, cfg, lookahead, groups, init, grads, lrs):
    from torch_optimizer import Lookahead

    k, alpha = lookahead
    params = make_params(init)
    inner = make_inner(kind, cfg, torch_groups(params, groups))
    opt = Lookahead(inner, k=k, alpha=alpha)
    out = {}
    for step in range(1, STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for name, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][name].copy())
        opt.step()
        snapshot(out, "param", step, params)
    for name, p in params.items():
        for key, value in inner.state[p].items():
            if key != "step":
                out[f"state.{key}.{name}"] = value.detach().numpy().copy()
        out[f"state.slow_param.{name}"] = opt.state[p]["slow_param"].detach().numpy().copy()
    torch_version = torch.__version__.split("+")[0]
    cls = {"adamw": "AdamW", "sgd": "SGD"}[kind]
    metadata = {
        "optimizer": "lookahead",
        "inner": kind,
        "config": json.dumps(dict(cfg, k=k, alpha=alpha)),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "counter": json.dumps([g["counter"] for g in opt.param_groups]),
        "reference": (
            f"torch-optimizer=={importlib.metadata.version('torch-optimizer')} torch_optimizer.Lookahead("
            f"torch.optim.{cls}(foreach=False, fused=False)) torch=={torch_version}"
        ),
    }
    return out, metadata


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "lookahead")
    args = parser.parse_args()

    torch.manual_seed(base.SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    init, grads = base.make_inputs()
    lrs = warmup_cosine(STEPS, peak=1e-2, floor=1e-3, warmup=4)
    check_inputs(root, init, grads, lrs)
    generator = f"gen_lookahead.py {pins('python', 'torch', 'numpy', 'safetensors', 'torch-optimizer')}"

    args.out.mkdir(parents=True, exist_ok=True)
    for case, (kind, cfg, lookahead, groups) in CASES.items():
        out, metadata = run_case(kind, cfg, lookahead, groups, init, grads, lrs)
        metadata["generator"] = generator
        save_numpy(out, str(args.out / f"{case}.safetensors"), metadata=metadata)
        print(f"wrote {case}: {len(out)} tensors")


if __name__ == "__main__":
    main()
