#!/usr/bin/env python3
"""Golden fixtures for the torch.optim optimizers (AdamW, Adam, SGD, RMSprop,
Adagrad), timm's Lamb and Lars, and lion-pytorch's Lion.

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
CPU in float32 with ``foreach=False, fused=False`` (the single-tensor path); timm's
optimizers run with ``foreach=False`` (their single-tensor path) and Lion with its
plain PyTorch update (``use_triton=False``).

The output is deterministic on one machine: fixed seeds, one thread, and a
safetensors writer with a stable header. Across machines the inputs and the SGD
cases are stable; the Adam cases may differ in the last bits, because torch's
float32 CPU sqrt comes from a vector math library that is not correctly rounded
and whose results depend on the CPU.

Run with the versions pinned in requirements.txt and requirements-nodeps.txt (timm,
installed with ``pip install --no-deps``):

    python scripts/torch_fixtures/gen_torch_optim.py
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, warmup_cosine  # noqa: E402

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
    # The cases below all use two groups: group 0 with weight decay, group 1 without.
    # Lion's update is lr * sign(.), so its lr is scaled down to the range Lion is run at.
    "lion_default": ("lion", dict(), [(0.1, 0.0), (0.1, 0.0)]),
    "lion_wd": ("lion", dict(betas=[0.95, 0.98], weight_decay=1.0), [(0.1, 1.0), (0.1, 0.0)]),
    # timm's Lamb defaults: L2 (coupled) decay, global grad-norm clipping at 1.0. The
    # inputs' global gradient norm is about 2.8e3, so every step clips.
    "lamb_default": ("lamb", dict(), [(1.0, 1e-2), (1.0, 0.0)]),
    "lamb_no_clip": ("lamb", dict(max_grad_norm=None), [(1.0, 1e-2), (1.0, 0.0)]),
    "lamb_clip_decoupled": (
        "lamb",
        dict(max_grad_norm=5e2, decoupled_decay=True, weight_decay=0.1),
        [(1.0, 0.1), (1.0, 0.0)],
    ),
    "lamb_no_bias_correction": (
        "lamb",
        dict(bias_correction=False, grad_averaging=False, betas=[0.8, 0.99]),
        [(1.0, 1e-2), (1.0, 0.0)],
    ),
    "lamb_always_adapt_trust_clip": (
        "lamb",
        dict(always_adapt=True, trust_clip=True, max_grad_norm=None),
        [(1.0, 1e-2), (1.0, 0.0)],
    ),
    # Lars is run at its usual learning rates (timm's default lr is 1.0) in the adapted
    # group; group 1 (no decay, so no adaptation unless always_adapt) is plain SGD.
    "lars_default": ("lars", dict(), [(100.0, 1e-4), (1.0, 0.0)]),
    "lars_momentum": ("lars", dict(momentum=0.9, dampening=0.1), [(100.0, 1e-4), (1.0, 0.0)]),
    "lars_nesterov": ("lars", dict(momentum=0.9, nesterov=True), [(100.0, 1e-4), (1.0, 0.0)]),
    "lars_trust_clip": (
        "lars",
        dict(momentum=0.9, trust_clip=True, always_adapt=True, trust_coeff=0.02, eps=1e-6),
        [(50.0, 1e-4), (50.0, 0.0)],
    ),
    "rmsprop_default": ("rmsprop", dict(), [(1.0, 0.0), (1.0, 0.0)]),
    "rmsprop_centered_momentum": (
        "rmsprop",
        dict(centered=True, momentum=0.9, alpha=0.9),
        [(1.0, 0.0), (1.0, 0.0)],
    ),
    "rmsprop_wd": ("rmsprop", dict(weight_decay=1e-2, maximize=True, eps=1e-6), [(1.0, 1e-2), (1.0, 0.0)]),
    "adagrad_default": ("adagrad", dict(), [(1.0, 0.0), (1.0, 0.0)]),
    "adagrad_lr_decay_wd": (
        "adagrad",
        dict(lr_decay=0.05, weight_decay=1e-2, initial_accumulator_value=0.1, maximize=True),
        [(1.0, 1e-2), (1.0, 0.0)],
    ),
}

ADAM_DEFAULTS = dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False)
ADAMW_DEFAULTS = dict(ADAM_DEFAULTS, weight_decay=1e-2)
SGD_DEFAULTS = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
LION_DEFAULTS = dict(betas=[0.9, 0.99], weight_decay=0.0)
LAMB_DEFAULTS = dict(
    bias_correction=True,
    betas=[0.9, 0.999],
    eps=1e-6,
    weight_decay=1e-2,
    grad_averaging=True,
    max_grad_norm=1.0,
    trust_clip=False,
    always_adapt=False,
    decoupled_decay=False,
)
LARS_DEFAULTS = dict(
    momentum=0.0,
    dampening=0.0,
    weight_decay=0.0,
    nesterov=False,
    trust_coeff=1e-3,
    eps=1e-8,
    trust_clip=False,
    always_adapt=False,
)
RMSPROP_DEFAULTS = dict(alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False)
ADAGRAD_DEFAULTS = dict(lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False)
EXTRA_DEFAULTS = {
    "lion": LION_DEFAULTS,
    "lamb": LAMB_DEFAULTS,
    "lars": LARS_DEFAULTS,
    "rmsprop": RMSPROP_DEFAULTS,
    "adagrad": ADAGRAD_DEFAULTS,
}


@functools.cache
def import_timm_optim():
    """timm's Lamb and Lars modules, without importing the ``timm`` package itself.

    ``timm/__init__.py`` imports its models and data pipeline, which need torchvision,
    and torchvision has no build for the pinned torch. The optimizers need only torch,
    so the two parent packages are registered as bare namespaces and the optimizer
    modules are loaded from the installed (pinned) timm.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        raise RuntimeError("timm is not installed (see requirements-nodeps.txt)")
    root = Path(spec.origin).parent
    for name, path in (("timm", root), ("timm.optim", root / "optim")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module
    lamb = importlib.import_module("timm.optim.lamb")
    lars = importlib.import_module("timm.optim.lars")
    return lamb.Lamb, lars.Lars


def package_version(name: str) -> str:
    return importlib.metadata.version(name)


def build_extra_optimizer(optimizer: str, torch_groups: list[dict], cfg: dict):
    if optimizer == "lion":
        from lion_pytorch import Lion

        return Lion(torch_groups, lr=1.0, betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"], use_triton=False)
    if optimizer == "lamb":
        lamb_cls, _ = import_timm_optim()
        return lamb_cls(
            torch_groups,
            lr=1.0,
            bias_correction=cfg["bias_correction"],
            betas=tuple(cfg["betas"]),
            eps=cfg["eps"],
            weight_decay=cfg["weight_decay"],
            grad_averaging=cfg["grad_averaging"],
            max_grad_norm=cfg["max_grad_norm"],
            trust_clip=cfg["trust_clip"],
            always_adapt=cfg["always_adapt"],
            decoupled_decay=cfg["decoupled_decay"],
            foreach=False,
        )
    if optimizer == "lars":
        _, lars_cls = import_timm_optim()
        return lars_cls(
            torch_groups,
            lr=1.0,
            momentum=cfg["momentum"],
            dampening=cfg["dampening"],
            weight_decay=cfg["weight_decay"],
            nesterov=cfg["nesterov"],
            trust_coeff=cfg["trust_coeff"],
            eps=cfg["eps"],
            trust_clip=cfg["trust_clip"],
            always_adapt=cfg["always_adapt"],
            foreach=False,
        )
    if optimizer == "rmsprop":
        return torch.optim.RMSprop(
            torch_groups,
            lr=1.0,
            alpha=cfg["alpha"],
            eps=cfg["eps"],
            weight_decay=cfg["weight_decay"],
            momentum=cfg["momentum"],
            centered=cfg["centered"],
            maximize=cfg["maximize"],
            foreach=False,
        )
    if optimizer == "adagrad":
        return torch.optim.Adagrad(
            torch_groups,
            lr=1.0,
            lr_decay=cfg["lr_decay"],
            weight_decay=cfg["weight_decay"],
            initial_accumulator_value=cfg["initial_accumulator_value"],
            eps=cfg["eps"],
            maximize=cfg["maximize"],
            foreach=False,
            fused=False,
        )
    raise ValueError(optimizer)


def extra_reference_string(optimizer: str) -> str:
    torch_version = torch.__version__.split("+")[0]
    if optimizer == "lion":
        return f"lion-pytorch=={package_version('lion-pytorch')} lion_pytorch.Lion(use_triton=False) torch=={torch_version}"
    if optimizer in ("lamb", "lars"):
        cls = {"lamb": "Lamb", "lars": "Lars"}[optimizer]
        return f"timm=={package_version('timm')} timm.optim.{cls}(foreach=False) torch=={torch_version}"
    cls = {"rmsprop": "RMSprop", "adagrad": "Adagrad"}[optimizer]
    return f"torch=={torch_version} torch.optim.{cls}(foreach=False)"


def full_config(optimizer: str, overrides: dict) -> dict:
    base = {"adamw": ADAMW_DEFAULTS, "adam": ADAM_DEFAULTS, "sgd": SGD_DEFAULTS, **EXTRA_DEFAULTS}[optimizer]
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown {optimizer} options: {sorted(unknown)}")
    return dict(base, **overrides)


def build_optimizer(optimizer: str, torch_groups: list[dict], cfg: dict):
    if optimizer in EXTRA_DEFAULTS:
        return build_extra_optimizer(optimizer, torch_groups, cfg)
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
    if optimizer in EXTRA_DEFAULTS:
        return extra_reference_string(optimizer)
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
    return f"gen_torch_optim.py {pins('python', 'torch', 'numpy', 'safetensors')}"


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
    lrs = warmup_cosine(STEPS, peak=1e-2, floor=1e-3, warmup=4)

    tensors = {f"init.{n}": init[n] for n, *_ in TENSORS}
    for s in range(STEPS):
        for n, *_ in TENSORS:
            tensors[f"grad.{s + 1}.{n}"] = grads[s][n]
    save_numpy(
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
        save_numpy(out, str(args.out / f"{case}.safetensors"), metadata=metadata)
        print(f"wrote {case}: {len(out)} tensors")


if __name__ == "__main__":
    main()
