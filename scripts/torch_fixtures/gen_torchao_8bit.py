#!/usr/bin/env python3
"""Golden fixtures for the 8-bit blockwise optimizers (AdamW8bit, Adam8bit, Lion8bit).

Writes, under tests/fixtures/torchao_8bit/ (or --out):

* ``inputs.safetensors``: the initial parameters ``init.<name>``, the gradients
  ``grad.<step>.<name>`` for step 1..=N, and metadata ``tensors`` (name, shape,
  group), ``lrs`` (the base learning rate of every step), ``steps`` and
  ``generator`` (the versions used).
* ``<case>.safetensors`` for every case below:
  - ``param.<step>.<name>``: every tensor's parameters after every step;
  - ``codes.<state>.<step>.<name>`` (U8) and ``absmax.<state>.<step>.<name>``
    (F32): the quantised state of every quantised tensor after every step,
    flat, one absmax per block;
  - ``state.<state>.<name>``: the f32 state of every 32-bit fallback tensor
    after the last step;
  - ``qmap.signed`` and ``qmap.unsigned``: the 256-entry dynamic maps used;
  - for cases with a 32-bit twin (``twin`` below), ``twin.param.<step>.<name>``:
    the fallback tensors' trajectory under the plain fp32 optimizer;
  - metadata ``optimizer``, ``config`` (hyperparameters except lr, with
    ``block_size``), ``groups`` (per group ``lr_scale`` and ``weight_decay``),
    ``quantized`` (names of the tensors with 8-bit state), ``reference``,
    ``twin_reference`` and ``self_divergence`` (see below).

At step s every param group's lr is ``lrs[s - 1] * lr_scale``.

References:

* AdamW8bit and Adam8bit: ``torchao.optim.AdamW8bit`` / ``Adam8bit`` exactly as
  torchao runs them, i.e. through ``torch.compile`` (inductor's C++ backend on
  the CPU, which needs a C++ compiler). torchao quantises a tensor only when it
  has at least 4096 elements and a whole number of blocks, and keeps f32 state
  for every other tensor: ``w_ragged`` has enough elements but not a whole
  number of blocks, so it is one such. torchao keeps the learning rate in an f32
  tensor, so the lr it uses is the f32 rounding of ``lrs[s - 1] * lr_scale``.
* Lion8bit: no library ships an 8-bit Lion that runs on a CPU, so the case
  composes two references: ``lion_pytorch.Lion`` performs every update (decay
  before the update, sign(0) = 0), and its momentum is stored between steps
  as torchao's 8-bit state: before each step it is replaced by
  ``dequant_with_qmap`` of the stored codes, after each step it is requantised
  with ``scale_tensor`` and ``quantize_8bit_with_qmap`` (signed map). Tensors
  under 4096 elements keep lion-pytorch's own f32 momentum.

``self_divergence`` records, for the torchao cases, how far torchao's eager
mode (the same functions run op by op, where ``lerp`` uses an fma) drifts
from its compiled mode over the same steps: the largest per-tensor norm-wise
relative parameter difference, and the share of identical state codes. It is
the reference's own sensitivity to f32 rounding, which the GPU tests use to
explain their tolerance.

The output is deterministic on one machine (fixed seeds, one thread, a
safetensors writer with a sorted header). The maps come from torch.linspace,
whose float32 rounding depends on whether the CPU kernel fuses multiply-adds;
the Rust side rebuilds the maps and its tests compare them with the ones
recorded here.

Run with the versions pinned in requirements.txt:

    python scripts/torch_fixtures/gen_torchao_8bit.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import lion_pytorch
import numpy as np
import torch
import torchao
import torchao.optim.adam as torchao_adam
from torchao.optim import Adam8bit, AdamW8bit
from torchao.optim.quant_utils import dequant_with_qmap, quantize_8bit_with_qmap, scale_tensor
from torchao.optim.subclass_8bit import OptimState8bit, get_qmap_signed, get_qmap_unsigned

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, version, warmup_cosine  # noqa: E402

STEPS = 30
SEED = 20250214
BLOCK = 256
MIN_QUANTIZED = 4096

# (name, shape, group, init scale). Two tensors are quantised (at least 4096
# elements and whole blocks); 4095 elements is one short of the threshold, and
# w_ragged (4550 elements, 17.8 blocks) is over it but not whole blocks, so
# torchao keeps its state in f32. It comes last so that the random draws of the
# tensors before it are those of the fixtures generated without it.
TENSORS = [
    ("embed", [24, 256], 0, 0.5),
    ("w", [64, 64], 1, 0.1),
    ("w_tail", [63, 65], 0, 0.1),
    ("bias", [64], 1, 0.01),
    ("gain", [1], 0, 1.0),
    ("w_ragged", [70, 65], 1, 0.1),
]

# name -> (optimizer, config, groups as [(lr_scale, weight_decay)], lr multiplier, twin)
CASES = {
    "adamw8bit": (
        "adamw8bit",
        dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2),
        [(1.0, 1e-2), (0.5, 0.1)],
        1.0,
        "adamw",
    ),
    "adam8bit": (
        "adam8bit",
        dict(betas=[0.8, 0.99], eps=1e-6, weight_decay=1e-3),
        [(1.0, 1e-3), (2.0, 0.0)],
        1.0,
        "adam",
    ),
    "lion8bit": (
        "lion8bit",
        dict(betas=[0.9, 0.99], weight_decay=0.5),
        [(1.0, 0.5), (0.5, 0.0)],
        0.1,
        None,
    ),
}


def make_inputs():
    """Gradients whose scale is constant within each 256-element block and varies
    between blocks over four orders of magnitude (so blocks have very different
    absmax), a block of `embed` that is all zero for the first three steps
    (torchao's 1e-12 absmax floor), a block of `w` that is zero at step 12, and
    scattered exact zeros in the tensors with f32 state.

    Scattered zeros stay out of the quantised tensors on purpose. An element
    whose second moment lies below half its block's smallest nonzero code
    (3.25e-7 of the absmax) dequantises to v = 0; a zero gradient then leaves
    v = 0 while m is not, and the update becomes lr * m / eps, a jump of
    thousands. torchao and bitsandbytes behave so and wgoptim reproduces it
    (tests/gpu/eightbit.rs pins it against the CPU oracle), but a fixture meant
    to check ordinary steps, with a bound relative to each tensor's scale, keeps
    clear of it."""
    rng = np.random.default_rng(SEED)
    init, grads = {}, [dict() for _ in range(STEPS)]
    for name, shape, _group, iscale in TENSORS:
        n = math.prod(shape)
        init[name] = (rng.standard_normal(shape) * iscale).astype(np.float32)
        block_scale = 10.0 ** rng.uniform(-3.0, 1.0, size=-(-n // BLOCK))
        scale = np.repeat(block_scale, BLOCK)[:n].reshape(shape)
        drift = rng.standard_normal(shape)
        for s in range(STEPS):
            g = ((0.3 * drift + rng.standard_normal(shape)) * scale).astype(np.float32)
            if not quantized(name):
                g[rng.random(shape) < 0.02] = 0.0
            grads[s][name] = g
    for s in range(3):
        grads[s]["embed"].reshape(-1)[:BLOCK] = 0.0
    grads[11]["w"].reshape(-1)[5 * BLOCK : 6 * BLOCK] = 0.0
    return init, grads


def quantized(name: str) -> bool:
    n = math.prod(next(t[1] for t in TENSORS if t[0] == name))
    return n >= MIN_QUANTIZED and n % BLOCK == 0


def make_params(init):
    return {n: torch.nn.Parameter(torch.from_numpy(init[n].copy())) for n, *_ in TENSORS}


def torch_groups(params, groups):
    return [
        {"params": [params[t[0]] for t in TENSORS if t[2] == gid], "weight_decay": wd}
        for gid, (_scale, wd) in enumerate(groups)
    ]


@contextlib.contextmanager
def eager_torchao():
    """Runs torchao's step op by op: its module calls torch.compile(f, ...)(...)."""
    compile_fn = torchao_adam.torch.compile
    torchao_adam.torch.compile = lambda f, **_: f
    try:
        yield
    finally:
        torchao_adam.torch.compile = compile_fn


def run_torchao(optimizer, cfg, groups, init, grads, lrs):
    """Returns (params per step, codes/absmax per step, final fallback state)."""
    params = make_params(init)
    cls = AdamW8bit if optimizer == "adamw8bit" else Adam8bit
    opt = cls(
        torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        block_size=BLOCK,
    )
    traj, states = [], []
    for step in range(1, STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"].fill_(lrs[step - 1] * groups[gid][0])
        for n, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][n].copy())
        opt.step()
        traj.append({n: p.detach().numpy().copy() for n, p in params.items()})
        snap = {}
        for n, p in params.items():
            for key in ("exp_avg", "exp_avg_sq"):
                value = opt.state[p][key]
                if isinstance(value, OptimState8bit):
                    if value.block_size != BLOCK:
                        raise RuntimeError(f"{n}: block size {value.block_size}")
                    snap[(key, n)] = (
                        value.codes.reshape(-1).numpy().copy(),
                        value.scale.numpy().copy(),
                    )
                else:
                    snap[(key, n)] = value.detach().numpy().copy()
        states.append(snap)
    for n in params:
        if isinstance(opt.state[params[n]]["exp_avg"], OptimState8bit) != quantized(n):
            raise RuntimeError(f"{n}: torchao's choice of 8-bit state differs from ours")
    return traj, states


def run_lion8bit(cfg, groups, init, grads, lrs):
    params = make_params(init)
    opt = lion_pytorch.Lion(
        torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        weight_decay=cfg["weight_decay"],
    )
    qmap = torch.tensor(get_qmap_signed(), dtype=torch.float32)
    q = {}
    for n, p in params.items():
        if quantized(n):
            q[n] = (torch.zeros(p.numel(), dtype=torch.uint8), torch.zeros(p.numel() // BLOCK))
    traj, states = [], []
    for step in range(1, STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for n, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][n].copy())
            if n in q:
                codes, scale = q[n]
                opt.state[p]["exp_avg"] = dequant_with_qmap(codes, qmap, scale).view(p.shape).clone()
        opt.step()
        snap = {}
        for n, p in params.items():
            m = opt.state[p]["exp_avg"]
            if n in q:
                scaled, scale = scale_tensor(m.reshape(-1), BLOCK)
                codes = quantize_8bit_with_qmap(scaled, qmap)
                q[n] = (codes, scale)
                snap[("exp_avg", n)] = (codes.numpy().copy(), scale.numpy().copy())
            else:
                snap[("exp_avg", n)] = m.detach().numpy().copy()
        traj.append({n: p.detach().numpy().copy() for n, p in params.items()})
        states.append(snap)
    return traj, states


def run_twin(twin, cfg, groups, init, grads, lrs):
    """The plain fp32 torch.optim optimizer on the same inputs."""
    params = make_params(init)
    cls = torch.optim.AdamW if twin == "adamw" else torch.optim.Adam
    opt = cls(
        torch_groups(params, groups),
        lr=1.0,
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        foreach=False,
        fused=False,
    )
    traj = []
    for step in range(1, STEPS + 1):
        for gid, group in enumerate(opt.param_groups):
            group["lr"] = lrs[step - 1] * groups[gid][0]
        for n, p in params.items():
            p.grad = torch.from_numpy(grads[step - 1][n].copy())
        opt.step()
        traj.append({n: p.detach().numpy().copy() for n, p in params.items()})
    return traj


def divergence(traj_a, states_a, traj_b, states_b) -> dict:
    worst = 0.0
    for a, b in zip(traj_a, traj_b):
        for n in a:
            scale = max(float(np.abs(a[n]).max()), np.finfo(np.float32).tiny)
            worst = max(worst, float(np.abs(a[n] - b[n]).max()) / scale)
    same = total = 0
    for a, b in zip(states_a, states_b):
        for key, value in a.items():
            if isinstance(value, tuple):
                same += int((value[0] == b[key][0]).sum())
                total += value[0].size
    return {"max_param_rel_err": worst, "identical_codes": same, "codes": total}


def case_tensors(traj, states, twin_traj):
    out = {}
    for step, (params, snap) in enumerate(zip(traj, states), start=1):
        for n, value in params.items():
            out[f"param.{step}.{n}"] = value
        for (key, n), value in snap.items():
            if isinstance(value, tuple):
                out[f"codes.{key}.{step}.{n}"] = value[0].astype(np.uint8)
                out[f"absmax.{key}.{step}.{n}"] = value[1].astype(np.float32)
            elif step == STEPS:
                out[f"state.{key}.{n}"] = value
    if twin_traj is not None:
        for step, params in enumerate(twin_traj, start=1):
            for n, value in params.items():
                if not quantized(n):
                    out[f"twin.param.{step}.{n}"] = value
    out["qmap.signed"] = np.array(get_qmap_signed(), dtype=np.float32)
    out["qmap.unsigned"] = np.array(get_qmap_unsigned(), dtype=np.float32)
    return out


def versions() -> str:
    return (
        f"{pins('torch', local=False)} torchao=={torchao.__version__} "
        f"{pins('lion-pytorch', 'numpy', 'safetensors')}"
    )


def reference_string(optimizer: str) -> str:
    torch_v = torch.__version__.split("+")[0]
    if optimizer == "lion8bit":
        return (
            f"lion-pytorch=={version('lion-pytorch')} Lion on CPU f32, momentum stored as "
            f"torchao=={torchao.__version__} 8-bit blockwise state (block {BLOCK}, signed map)"
        )
    cls = "AdamW8bit" if optimizer == "adamw8bit" else "Adam8bit"
    return (
        f"torchao=={torchao.__version__} torchao.optim.{cls}(block_size={BLOCK}) "
        f"through torch.compile (torch=={torch_v}, inductor C++ on CPU)"
    )


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "torchao_8bit")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)

    init, grads = make_inputs()
    lrs = warmup_cosine(STEPS, peak=1e-2, floor=5e-4, warmup=5)
    tensors = {f"init.{n}": init[n] for n, *_ in TENSORS}
    for s in range(STEPS):
        for n, *_ in TENSORS:
            tensors[f"grad.{s + 1}.{n}"] = grads[s][n]
    save_numpy(
        tensors,
        args.out / "inputs.safetensors",
        {
            "tensors": json.dumps([{"name": n, "shape": sh, "group": g} for n, sh, g, _ in TENSORS]),
            "lrs": json.dumps(lrs),
            "steps": str(STEPS),
            "generator": f"gen_torchao_8bit.py python=={sys.version.split()[0]} {versions()}",
        },
    )

    for case, (optimizer, cfg, groups, lr_mult, twin) in CASES.items():
        case_lrs = [lr * lr_mult for lr in lrs]
        metadata = {
            "optimizer": optimizer,
            "config": json.dumps(dict(cfg, block_size=BLOCK, min_quantized_numel=MIN_QUANTIZED)),
            "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
            "lr_multiplier": json.dumps(lr_mult),
            "quantized": json.dumps([n for n, *_ in TENSORS if quantized(n)]),
            "reference": reference_string(optimizer),
        }
        if optimizer == "lion8bit":
            traj, states = run_lion8bit(cfg, groups, init, grads, case_lrs)
        else:
            traj, states = run_torchao(optimizer, cfg, groups, init, grads, case_lrs)
            with eager_torchao():
                eager_traj, eager_states = run_torchao(optimizer, cfg, groups, init, grads, case_lrs)
            metadata["self_divergence"] = json.dumps(divergence(traj, states, eager_traj, eager_states))
        twin_traj = None
        if twin is not None:
            twin_traj = run_twin(twin, cfg, groups, init, grads, case_lrs)
            cls = "AdamW" if twin == "adamw" else "Adam"
            metadata["twin_reference"] = (
                f"torch=={torch.__version__.split('+')[0]} torch.optim.{cls}(foreach=False, fused=False)"
            )
        save_numpy(case_tensors(traj, states, twin_traj), args.out / f"{case}.safetensors", metadata)
        print(f"wrote {case}: {metadata.get('self_divergence', '')}")


if __name__ == "__main__":
    main()
