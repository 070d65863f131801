#!/usr/bin/env python3
"""Golden fixtures for Adan: torch-optimi's ``optimi.Adan`` and, beside it,
adan-pytorch's ``adan_pytorch.Adan``.

Both run on the inputs of ``gen_torch_optim.py`` (six tensors in two parameter
groups, 24 steps of gradients, a learning rate that changes every step), which
this script rebuilds from that script's seed and checks against the committed
``tests/fixtures/torch_optim/inputs.safetensors`` bit for bit. It writes, in the
layout of ``gen_torch_optim.py``'s cases (``param.<step>.<name>`` after every
step, ``state.<key>.<name>`` after the last, metadata ``optimizer``,
``config``, ``groups`` and ``reference``; at step s a group's lr is
``lrs[s - 1] * lr_scale``):

* ``tests/fixtures/optimi_adan/<case>.safetensors``: optimi 0.3.3's ``Adan`` on
  its plain for-loop path (``foreach=False, triton=False``), f32 parameters,
  ``kahan_sum=False``. ``config`` holds ``betas`` (three), ``eps``,
  ``weight_decay``, ``decouple_lr``, ``max_lr`` and ``adam_wd``.
* ``tests/fixtures/adan_pytorch/<case>.safetensors``: adan-pytorch 0.1.0's
  ``Adan``, whose ``betas`` are the complements of optimi's (the weight of the
  new value, not of the old average). ``config`` holds its own ``betas``,
  ``eps`` and ``weight_decay``; ``optimi_gap_f32`` and ``optimi_gap_f64`` the
  worst gap, relative to each tensor's running scale, between adan-pytorch's
  calls 2..N and optimi started from adan-pytorch's state after its first call
  (its parameters, zero moments, ``prev_grad = -g1``, step count 1), with
  every tensor in float32 and in float64. adan-pytorch's first call only
  decays the parameters (its moments stay zero) and its bias corrections count
  that call; from there on the two are the same rule, which the float64 gap
  (about 1e-14) shows and the float32 gap prices.

optimi 0.3.3's ``Adan.step`` does not pass the group's ``adam_wd`` on to its
functional ``optimi.adan.adan`` (whose default is False), so ``Adan(adam_wd=True)``
steps exactly as ``adam_wd=False``; this script checks that, and records the
``adam_wd`` cases with the flag forwarded (``forward_adam_wd``), i.e. what
optimi's own functional code does with ``adam_wd=True``.

Run with the versions pinned in requirements.txt and requirements-nodeps.txt:

    python scripts/torch_fixtures/gen_adan.py
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, warmup_cosine  # noqa: E402
import gen_adopt_sf as common  # noqa: E402
import gen_torch_optim as base  # noqa: E402

OPTIMI_DEFAULTS = dict(
    betas=[0.98, 0.92, 0.99],
    eps=1e-6,
    weight_decay=2e-2,
    decouple_lr=False,
    max_lr=None,
    adam_wd=False,
)

# name -> (config overrides, groups as (lr_scale, weight_decay)); group 0 decays, group 1 does not.
# max_lr is the inputs' peak lr, as optimi's decouple_lr expects (lr / max_lr scales the decay).
OPTIMI_CASES = {
    "adan_default": (dict(), [(1.0, 2e-2), (1.0, 0.0)]),
    "adan_betas_eps": (
        dict(betas=[0.9, 0.8, 0.999], eps=1e-8, weight_decay=0.1),
        [(1.0, 0.1), (2.0, 0.0)],
    ),
    "adan_decouple_lr": (
        dict(decouple_lr=True, max_lr=1e-2, weight_decay=1e-3),
        [(1.0, 1e-3), (0.5, 0.0)],
    ),
    "adan_adam_wd": (dict(adam_wd=True, weight_decay=0.05), [(1.0, 0.05), (1.0, 0.0)]),
    "adan_adam_wd_decouple_lr": (
        dict(adam_wd=True, decouple_lr=True, max_lr=1e-2, weight_decay=2e-3, betas=[0.5, 0.3, 0.9]),
        [(1.0, 2e-3), (2.0, 0.0)],
    ),
}

ADAN_PYTORCH_DEFAULTS = dict(betas=[0.02, 0.08, 0.01], eps=1e-8, weight_decay=0.0)

# adan-pytorch's betas are 1 - optimi's: (0.02, 0.08, 0.01) is optimi's default (0.98, 0.92, 0.99).
ADAN_PYTORCH_CASES = {
    "adan_pytorch_default_betas": (dict(weight_decay=2e-2), [(1.0, 2e-2), (1.0, 0.0)]),
    "adan_pytorch_betas_eps": (
        dict(betas=[0.1, 0.2, 0.001], eps=1e-6, weight_decay=0.1),
        [(1.0, 0.1), (2.0, 0.0)],
    ),
}


@contextlib.contextmanager
def forward_adam_wd():
    """Makes ``optimi.Adan.step`` pass ``adam_wd=True`` to ``optimi.adan.adan``, which 0.3.3's step leaves out."""
    # `optimi.adan` names the function (optimi re-exports it), so take the module from sys.modules.
    import optimi  # noqa: F401

    module = sys.modules["optimi.adan"]
    plain = module.adan

    def with_adam_wd(*args, **kwargs):
        return plain(*args, **kwargs, adam_wd=True)

    module.adan = with_adam_wd
    try:
        yield
    finally:
        module.adan = plain


def run_optimi(cfg, groups, init, grads, lrs, forward=False):
    from optimi import Adan

    params = common.make_params(init)
    # lr=1.0 is replaced before every step; max_lr is given explicitly whenever decouple_lr is set.
    opt = Adan(
        common.torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        decouple_lr=cfg["decouple_lr"],
        max_lr=cfg["max_lr"],
        adam_wd=cfg["adam_wd"],
        kahan_sum=False,
        foreach=False,
        triton=False,
    )
    out = {}
    with forward_adam_wd() if forward else contextlib.nullcontext():
        for step in range(1, base.STEPS + 1):
            for gid, group in enumerate(opt.param_groups):
                group["lr"] = lrs[step - 1] * groups[gid][0]
            for name, p in params.items():
                p.grad = torch.from_numpy(grads[step - 1][name].copy())
            opt.step()
            common.snapshot(out, "param", step, params)
    for gid, group in enumerate(opt.param_groups):
        if group["foreach"] or group["triton"] or group["kahan_sum"]:
            raise RuntimeError(f"group {gid} left the plain for-loop path: {group}")
        if int(group["step"]) != base.STEPS:
            raise RuntimeError(f"group {gid} counted {int(group['step'])} steps")
    for name, p in params.items():
        for key, value in opt.state[p].items():
            if value is not None:
                out[f"state.{key}.{name}"] = value.detach().numpy().copy()
    return out


def optimi_case(overrides, groups, init, grads, lrs):
    cfg = dict(OPTIMI_DEFAULTS, **overrides)
    out = run_optimi(cfg, groups, init, grads, lrs, forward=cfg["adam_wd"])
    how = "for-loop path (foreach=False, triton=False, kahan_sum=False)"
    if cfg["adam_wd"]:
        ignored = run_optimi(cfg, groups, init, grads, lrs, forward=False)
        plain = run_optimi(dict(cfg, adam_wd=False), groups, init, grads, lrs, forward=False)
        if any(ignored[k].tobytes() != plain[k].tobytes() for k in plain):
            raise RuntimeError("optimi.Adan(adam_wd=True) no longer steps as adam_wd=False: revisit forward_adam_wd")
        how += ", adam_wd forwarded to optimi.adan.adan (Adan.step drops it)"
    torch_version = torch.__version__.split("+")[0]
    metadata = {
        "optimizer": "adan",
        "config": json.dumps(cfg),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "reference": f"torch-optimi=={importlib.metadata.version('torch-optimi')} optimi.Adan {how} torch=={torch_version}",
    }
    return out, metadata


def run_adan_pytorch(cfg, groups, init, grads, lrs, dtype):
    """adan-pytorch's parameters after every call, as ``{name: tensor}`` per step, and the optimizer."""
    from adan_pytorch import Adan

    params = {n: torch.nn.Parameter(torch.from_numpy(x.copy()).to(dtype)) for n, x in init.items()}
    opt = Adan(
        common.torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
    )
    trajectory = []
    for step in range(1, base.STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for name, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][name].copy()).to(dtype)
        opt.step()
        trajectory.append({n: p.detach().clone() for n, p in params.items()})
    return trajectory, opt, params


def optimi_after_first_call(cfg, groups, grads, lrs, trajectory, dtype):
    """optimi's Adan started where adan-pytorch's first call leaves off (its parameters, zero moments,
    prev_grad = -g1, step count 1) and stepped through calls 2..N; returns the worst gap to adan-pytorch
    over those calls, per tensor relative to the largest magnitude adan-pytorch's tensor has had so far."""
    from optimi import Adan

    params = {n: torch.nn.Parameter(x.clone()) for n, x in trajectory[0].items()}
    opt = Adan(
        common.torch_groups(params, groups),
        lr=1.0,
        betas=tuple(1.0 - b for b in cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        kahan_sum=False,
        foreach=False,
        triton=False,
    )
    # optimi creates its state at the first step it sees; a step with lr 0 and no decay creates it.
    for name, p in params.items():
        p.grad = torch.from_numpy(grads[0][name].copy()).to(dtype)
    state_decay = [g["weight_decay"] for g in opt.param_groups]
    for group in opt.param_groups:
        group["lr"], group["weight_decay"] = 0.0, 0.0
    opt.step()
    for group, wd in zip(opt.param_groups, state_decay):
        group["weight_decay"] = wd
    for name, p in params.items():
        state = opt.state[p]
        for key in ("exp_avg", "exp_avg_diff", "exp_avg_sq"):
            state[key].zero_()
        state["prev_grad"].copy_(-torch.from_numpy(grads[0][name].copy()).to(dtype))
        p.data.copy_(trajectory[0][name])
    scales = {n: x.abs().max().item() for n, x in trajectory[0].items()}
    worst = 0.0
    for step in range(2, base.STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for name, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][name].copy()).to(dtype)
        opt.step()
        for name, p in params.items():
            want = trajectory[step - 1][name]
            scales[name] = max(scales[name], want.abs().max().item())
            worst = max(worst, (p.detach() - want).abs().max().item() / scales[name])
    return worst


def adan_pytorch_case(overrides, groups, init, grads, lrs):
    cfg = dict(ADAN_PYTORCH_DEFAULTS, **overrides)
    trajectory, opt, params = run_adan_pytorch(cfg, groups, init, grads, lrs, torch.float32)
    out = {}
    for step, snapshot in enumerate(trajectory, start=1):
        for name, value in snapshot.items():
            out[f"param.{step}.{name}"] = value.numpy().copy()
    for name, p in params.items():
        for key, value in opt.state[p].items():
            if key != "step":
                out[f"state.{key}.{name}"] = value.detach().numpy().copy()
    # The same rule from the second call on: in float64 the two libraries agree to rounding of float64,
    # and the float32 gap is what their different operation orders cost.
    gap_f32 = optimi_after_first_call(cfg, groups, grads, lrs, trajectory, torch.float32)
    trajectory64, _, _ = run_adan_pytorch(cfg, groups, init, grads, lrs, torch.float64)
    gap_f64 = optimi_after_first_call(cfg, groups, grads, lrs, trajectory64, torch.float64)
    if gap_f64 > 1e-12:
        raise RuntimeError(f"optimi and adan-pytorch differ by {gap_f64} in float64 after the first call")
    torch_version = torch.__version__.split("+")[0]
    metadata = {
        "optimizer": "adan_pytorch",
        "config": json.dumps(cfg),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "optimi_gap_f32": json.dumps(gap_f32),
        "optimi_gap_f64": json.dumps(gap_f64),
        "reference": f"adan-pytorch=={importlib.metadata.version('adan-pytorch')} adan_pytorch.Adan torch=={torch_version}",
    }
    print(f"optimi after adan-pytorch's first call: gap {gap_f32:.3e} in float32, {gap_f64:.3e} in float64")
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
    lrs = warmup_cosine(base.STEPS, peak=1e-2, floor=1e-3, warmup=4)
    common.check_inputs(root, init, grads, lrs)
    generator = f"gen_adan.py {pins('python', 'torch', 'numpy', 'safetensors', 'torch-optimi', 'adan-pytorch')}"

    for dirname, cases, run in (
        ("optimi_adan", OPTIMI_CASES, optimi_case),
        ("adan_pytorch", ADAN_PYTORCH_CASES, adan_pytorch_case),
    ):
        out_dir = args.out / dirname
        out_dir.mkdir(parents=True, exist_ok=True)
        for case, (overrides, groups) in cases.items():
            out, metadata = run(overrides, groups, init, grads, lrs)
            metadata["generator"] = generator
            save_numpy(out, str(out_dir / f"{case}.safetensors"), metadata=metadata)
            print(f"wrote {dirname}/{case}: {len(out)} tensors")


if __name__ == "__main__":
    main()
