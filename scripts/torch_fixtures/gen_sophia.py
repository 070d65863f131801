#!/usr/bin/env python3
"""Golden fixtures for SophiaG (sophia-opt's ``SophiaG``, the authors' package).

The cases run on the inputs of ``gen_torch_optim.py`` (six tensors in two
parameter groups, 24 steps of gradients and learning rates), rebuilt from that
script's seed and checked against the committed
``tests/fixtures/torch_optim/inputs.safetensors`` bit for bit. SophiaG also
reads the gradients of a Hessian estimator (in a training loop: the gradients
of the loss on labels sampled from the model, Gauss-Newton-Bartlett), which
``update_hessian()`` folds into its diagonal estimate. Those are made here,
from a seed of their own, and written to
``tests/fixtures/sophia/inputs.safetensors`` as ``hgrad.<s>.<name>``: the
estimator gradients handed to ``update_hessian()`` right after step ``s``
(``s = 0``: before the first step).

Each case ``tests/fixtures/sophia/<case>.safetensors`` holds the parameters
after every step ``param.<step>.<name>``, the state after the last step
``state.<key>.<name>`` (``exp_avg``, ``hessian``) and the Hessian estimate
after every refresh ``hessian.<s>.<name>``, with metadata ``optimizer``
(``sophia_g``), ``config``, ``groups`` (per group ``lr_scale`` and
``weight_decay``), ``hessian_after`` (the values of ``s`` at which
``update_hessian()`` runs: after every ``k``-th step, as the authors' training
loop refreshes it), ``bs`` (the ``bs`` passed to every step) and
``reference``. At step s a group's lr is ``lrs[s - 1] * lr_scale`` with the
inputs' ``lrs``.

sophia-opt runs on the CPU in float32 (its only path is the single-tensor
one). Run with the versions pinned in requirements.txt:

    python scripts/torch_fixtures/gen_sophia.py
"""

from __future__ import annotations

import argparse
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
from gen_adopt_sf import check_inputs, make_params, snapshot, torch_groups  # noqa: E402

STEPS = base.STEPS
# Seed of the estimator gradients (the step gradients keep gen_torch_optim's).
HESSIAN_SEED = 20261202

DEFAULTS = dict(betas=[0.965, 0.99], rho=0.04, weight_decay=0.1, maximize=False)


def every(k: int, first: bool = False) -> list[int]:
    """The refreshes of a loop that calls update_hessian() after every k-th step (and before the first)."""
    return ([0] if first else []) + [s for s in range(1, STEPS + 1) if s % k == 0]


# name -> (config overrides, groups as (lr_scale, weight_decay), hessian_after, bs of every step)
CASES = {
    "sophia_default": (dict(), [(1.0, 0.1), (1.0, 0.0)], every(10), [5120] * STEPS),
    # A short refresh interval and a small batch, so the clipped and the unclipped branch both occur in
    # every tensor; group 1 at half the learning rate.
    "sophia_k3_betas": (
        dict(betas=[0.9, 0.95], rho=0.1, weight_decay=1e-2),
        [(1.0, 1e-2), (0.5, 0.0)],
        every(3),
        [64] * STEPS,
    ),
    "sophia_maximize": (
        dict(maximize=True, rho=0.02, weight_decay=0.05),
        [(1.0, 0.05), (2.0, 0.0)],
        every(4, first=True),
        [480] * STEPS,
    ),
    # A batch size that changes every step (the tokens of a batch may), no weight decay, and a refresh
    # after every second step; starts from an estimate made before the first step.
    "sophia_bs_varies": (
        dict(betas=[0.8, 0.999], rho=0.5, weight_decay=0.0),
        [(1.0, 0.0), (1.0, 0.0)],
        every(2, first=True),
        [1 + 37 * s for s in range(STEPS)],
    ),
}


def make_hessian_grads():
    """Estimator gradients after every step (and before the first): normal, at each tensor's gradient
    scale, with a few exact zeros and a few values a thousand times smaller, so that some elements keep a
    zero or tiny estimate and their update is clipped."""
    rng = np.random.default_rng(HESSIAN_SEED)
    out = {}
    for s in range(STEPS + 1):
        for name, shape, _group, gscale, _iscale in base.TENSORS:
            g = rng.standard_normal(shape) * gscale
            flat = g.reshape(-1)
            flat[rng.random(flat.shape) < 0.05] = 0.0
            tiny = rng.random(flat.shape) < 0.05
            flat[tiny] *= 1e-3
            out[(s, name)] = g.astype(np.float32)
    return out


def run_case(overrides, groups, hessian_after, bss, init, grads, hgrads, lrs):
    from sophia_opt import SophiaG

    cfg = dict(DEFAULTS, **overrides)
    params = make_params(init)
    opt = SophiaG(
        torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        rho=cfg["rho"],
        weight_decay=cfg["weight_decay"],
        maximize=cfg["maximize"],
    )
    out = {}

    def refresh(s):
        for name, p in params.items():
            p.grad = torch.from_numpy(hgrads[(s, name)].copy())
        opt.update_hessian()
        for name, p in params.items():
            out[f"hessian.{s}.{name}"] = opt.state[p]["hessian"].detach().numpy().copy()

    if 0 in hessian_after:
        refresh(0)
    for step in range(1, STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for name, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][name].copy())
        opt.step(bs=bss[step - 1])
        snapshot(out, "param", step, params)
        if step in hessian_after:
            refresh(step)
    for name, p in params.items():
        for key, value in opt.state[p].items():
            if key != "step":
                out[f"state.{key}.{name}"] = value.detach().numpy().copy()
    torch_version = torch.__version__.split("+")[0]
    metadata = {
        "optimizer": "sophia_g",
        "config": json.dumps(cfg),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "hessian_after": json.dumps(hessian_after),
        "bs": json.dumps(bss),
        "reference": (
            f"sophia-opt=={importlib.metadata.version('sophia-opt')} sophia_opt.SophiaG torch=={torch_version}"
        ),
    }
    return out, metadata


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "sophia")
    args = parser.parse_args()

    torch.manual_seed(base.SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    init, grads = base.make_inputs()
    lrs = warmup_cosine(STEPS, peak=1e-2, floor=1e-3, warmup=4)
    check_inputs(root, init, grads, lrs)
    hgrads = make_hessian_grads()
    generator = f"gen_sophia.py {pins('python', 'torch', 'numpy', 'safetensors', 'sophia-opt')}"

    args.out.mkdir(parents=True, exist_ok=True)
    save_numpy(
        {f"hgrad.{s}.{name}": g for (s, name), g in hgrads.items()},
        str(args.out / "inputs.safetensors"),
        metadata={"steps": str(STEPS), "generator": generator},
    )
    for case, (overrides, groups, hessian_after, bss) in CASES.items():
        out, metadata = run_case(overrides, groups, hessian_after, bss, init, grads, hgrads, lrs)
        metadata["generator"] = generator
        save_numpy(out, str(args.out / f"{case}.safetensors"), metadata=metadata)
        print(f"wrote {case}: {len(out)} tensors")


if __name__ == "__main__":
    main()
