#!/usr/bin/env python3
"""Golden fixtures for ADOPT (timm's ``Adopt``) and Schedule-Free AdamW
(``schedulefree.AdamWScheduleFree``).

Both run on the inputs of ``gen_torch_optim.py`` (the same six tensors in two
parameter groups, the same 24 steps of gradients), which this script rebuilds
from that script's seed and checks against the committed
``tests/fixtures/torch_optim/inputs.safetensors`` bit for bit. It writes:

* ``tests/fixtures/timm_adopt/<case>.safetensors``: the parameters after every
  step ``param.<step>.<name>`` and the state after the last step
  ``state.<key>.<name>``, with metadata ``optimizer`` (``adopt``), ``config``,
  ``groups`` (per group ``lr_scale`` and ``weight_decay``) and ``reference``,
  as ``gen_torch_optim.py`` writes its cases. At step s a group's lr is
  ``lrs[s - 1] * lr_scale`` with the inputs' ``lrs``.
* ``tests/fixtures/schedule_free/<case>.safetensors``: the same keys, where
  ``param.<step>`` is what the parameters hold after the step in train mode
  (Schedule-Free's y), plus ``eval.<step>.<name>``: what they hold after
  ``eval()`` (x) for every step listed in the metadata ``eval_after``; the
  next step is preceded by ``train()``. The metadata ``lrs`` holds the base
  lr of every step (most cases use a constant one, as Schedule-Free is meant
  to be run) and ``final_groups`` the host scalars of every group after the
  last step (``k``, ``lr_max``, ``weight_sum``, as Python floats).

Both references run on the CPU in float32 on their single-tensor paths
(``foreach=False``). Run with the versions pinned in requirements.txt and
requirements-nodeps.txt:

    python scripts/torch_fixtures/gen_adopt_sf.py
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, warmup_cosine  # noqa: E402
import gen_torch_optim as base  # noqa: E402

ADOPT_DEFAULTS = dict(
    betas=[0.9, 0.9999],
    eps=1e-6,
    clip_exp=0.333,
    weight_decay=0.0,
    decoupled=False,
    maximize=False,
)

# name -> (config overrides, groups as (lr_scale, weight_decay)); group 0 decays, group 1 does not.
# Without clipping, an element whose first gradient was exactly zero is divided by eps at the next step;
# adopt_no_clip uses a large eps so that those elements stay in range.
ADOPT_CASES = {
    "adopt_default": (dict(), [(1.0, 1e-2), (1.0, 0.0)]),
    "adopt_decoupled": (dict(decoupled=True, weight_decay=0.1), [(1.0, 0.1), (1.0, 0.0)]),
    "adopt_no_clip": (dict(clip_exp=None, betas=[0.8, 0.99], eps=1.0), [(1.0, 1e-2), (2.0, 0.0)]),
    "adopt_clip_quarter_maximize": (
        dict(clip_exp=0.25, maximize=True, decoupled=True, weight_decay=1e-2),
        [(1.0, 1e-2), (0.5, 0.0)],
    ),
}

SF_DEFAULTS = dict(
    betas=[0.9, 0.999],
    eps=1e-8,
    weight_decay=0.0,
    warmup_steps=0,
    r=0.0,
    weight_lr_power=2.0,
)

STEPS = base.STEPS
CONSTANT = "constant"
SCHEDULE = "schedule"

# name -> (config overrides, groups, lr (a constant base lr, or SCHEDULE for the inputs' changing lrs),
#          steps after which eval() is called)
SF_CASES = {
    "sf_default": (dict(), [(1.0, 1e-2), (1.0, 0.0)], 2.5e-3, [6, 12, 24]),
    "sf_warmup": (
        dict(warmup_steps=10, weight_decay=0.05),
        [(1.0, 0.05), (1.0, 0.0)],
        5e-3,
        [1, 5, 10, 17, 24],
    ),
    # r and weight_lr_power away from their defaults, per-group lr scales, and a changing lr, so lr_max
    # follows the warmup of the lr and then stays while the lr decays.
    "sf_r_power_schedule": (
        dict(r=0.5, weight_lr_power=1.0, betas=[0.95, 0.99], warmup_steps=4, weight_decay=1e-2),
        [(1.0, 1e-2), (0.5, 0.0)],
        SCHEDULE,
        [3, 8, 20],
    ),
    # beta1 < 0.5: the train() and eval() lerp weights (0.6 and -1.5) take torch's other lerp branch.
    "sf_low_beta1": (
        dict(betas=[0.4, 0.999], eps=1e-6, weight_lr_power=0.0, weight_decay=1e-3),
        [(1.0, 1e-3), (2.0, 0.0)],
        1e-3,
        [2, 4, 8, 12, 16, 20, 23],
    ),
}


def import_adopt():
    """timm's Adopt, loaded without the ``timm`` package (see ``gen_torch_optim.import_timm_optim``)."""
    base.import_timm_optim()
    return importlib.import_module("timm.optim.adopt").Adopt


def check_inputs(root: Path, init, grads, lrs) -> None:
    """The rebuilt inputs equal the committed ones, so the cases below belong to them."""
    from safetensors.numpy import load_file

    path = root / "tests" / "fixtures" / "torch_optim" / "inputs.safetensors"
    committed = load_file(str(path))
    for name, *_ in base.TENSORS:
        if committed[f"init.{name}"].tobytes() != init[name].tobytes():
            raise RuntimeError(f"{path}: init.{name} differs from the rebuilt inputs")
        for s in range(STEPS):
            if committed[f"grad.{s + 1}.{name}"].tobytes() != grads[s][name].tobytes():
                raise RuntimeError(f"{path}: grad.{s + 1}.{name} differs from the rebuilt inputs")
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    if json.loads(header["__metadata__"]["lrs"]) != lrs:
        raise RuntimeError(f"{path}: the lrs differ from the rebuilt ones")


def make_params(init):
    return {t[0]: torch.nn.Parameter(torch.from_numpy(init[t[0]].copy())) for t in base.TENSORS}


def torch_groups(params, groups):
    return [
        {"params": [params[t[0]] for t in base.TENSORS if t[2] == gid], "weight_decay": wd}
        for gid, (_scale, wd) in enumerate(groups)
    ]


def snapshot(out, prefix, step, params):
    for name, p in params.items():
        out[f"{prefix}.{step}.{name}"] = p.detach().numpy().copy()


def run_adopt(overrides, groups, init, grads, lrs):
    cfg = dict(ADOPT_DEFAULTS, **overrides)
    params = make_params(init)
    opt = import_adopt()(
        torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        clip_exp=cfg["clip_exp"],
        weight_decay=cfg["weight_decay"],
        decoupled=cfg["decoupled"],
        maximize=cfg["maximize"],
        foreach=False,
    )
    out = {}
    for step in range(1, STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for name, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][name].copy())
        opt.step()
        snapshot(out, "param", step, params)
    for name, p in params.items():
        for key, value in opt.state[p].items():
            if key != "step":
                out[f"state.{key}.{name}"] = value.detach().numpy().copy()
    torch_version = torch.__version__.split("+")[0]
    metadata = {
        "optimizer": "adopt",
        "config": json.dumps(cfg),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "reference": f"timm=={importlib.metadata.version('timm')} timm.optim.Adopt(foreach=False) torch=={torch_version}",
    }
    return out, metadata


def run_schedule_free(overrides, groups, lr, eval_after, init, grads, lrs):
    from schedulefree import AdamWScheduleFree

    cfg = dict(SF_DEFAULTS, **overrides)
    base_lrs = list(lrs) if lr == SCHEDULE else [lr] * STEPS
    params = make_params(init)
    opt = AdamWScheduleFree(
        torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        warmup_steps=cfg["warmup_steps"],
        r=cfg["r"],
        weight_lr_power=cfg["weight_lr_power"],
        foreach=False,
    )
    out = {}
    for step in range(1, STEPS + 1):
        opt.train()
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = base_lrs[step - 1] * groups[gid][0]
        for name, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][name].copy())
        opt.step()
        snapshot(out, "param", step, params)
        if step in eval_after:
            opt.eval()
            snapshot(out, "eval", step, params)
    for name, p in params.items():
        for key, value in opt.state[p].items():
            out[f"state.{key}.{name}"] = value.detach().numpy().copy()
    final_groups = [
        {"k": g["k"], "lr_max": g["lr_max"], "weight_sum": g["weight_sum"], "train_mode": g["train_mode"]}
        for g in opt.param_groups
    ]
    torch_version = torch.__version__.split("+")[0]
    metadata = {
        "optimizer": "schedule_free_adamw",
        "config": json.dumps(cfg),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "lrs": json.dumps(base_lrs),
        "eval_after": json.dumps(eval_after),
        "final_groups": json.dumps(final_groups),
        "reference": (
            f"schedulefree=={importlib.metadata.version('schedulefree')} "
            f"schedulefree.AdamWScheduleFree(foreach=False) torch=={torch_version}"
        ),
    }
    return out, metadata


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures")
    args = parser.parse_args()

    torch.manual_seed(base.SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    init, grads = base.make_inputs()
    lrs = warmup_cosine(STEPS, peak=1e-2, floor=1e-3, warmup=4)
    check_inputs(root, init, grads, lrs)
    generator = f"gen_adopt_sf.py {pins('python', 'torch', 'numpy', 'safetensors', 'timm', 'schedulefree')}"

    adopt_dir = args.out / "timm_adopt"
    adopt_dir.mkdir(parents=True, exist_ok=True)
    for case, (overrides, groups) in ADOPT_CASES.items():
        out, metadata = run_adopt(overrides, groups, init, grads, lrs)
        metadata["generator"] = generator
        save_numpy(out, str(adopt_dir / f"{case}.safetensors"), metadata=metadata)
        print(f"wrote {case}: {len(out)} tensors")

    sf_dir = args.out / "schedule_free"
    sf_dir.mkdir(parents=True, exist_ok=True)
    for case, (overrides, groups, lr, eval_after) in SF_CASES.items():
        out, metadata = run_schedule_free(overrides, groups, lr, eval_after, init, grads, lrs)
        metadata["generator"] = generator
        save_numpy(out, str(sf_dir / f"{case}.safetensors"), metadata=metadata)
        print(f"wrote {case}: {len(out)} tensors")


if __name__ == "__main__":
    main()
