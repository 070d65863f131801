#!/usr/bin/env python3
"""Golden fixtures for the optimizers wgoptim matches against torch-optimi
(``optimi``): StableAdamW.

optimi has three implementations of each optimizer: a plain for-loop over the
tensors (``foreach=False, triton=False``), a ``torch._foreach_*`` one and Triton
kernels. The fixtures come from the for-loop path, which is the one that runs
the update with ordinary tensor operations in a documented order; the generator
pins it (``foreach=False, triton=False``) and checks, by wrapping optimi's
``_single_stableadamw``, that every step went through it. ``kahan_sum`` is off:
the parameters are float32, for which optimi never uses Kahan summation.

Writes, under tests/fixtures/optimi_stable_adamw/ (or --out):

* cases on the shared inputs of ``gen_torch_optim.py`` (six tensors in two
  parameter groups, 24 steps; rebuilt from that script's seed and checked
  against the committed ``tests/fixtures/torch_optim/inputs.safetensors``):
  ``param.<step>.<name>`` after every step and ``state.<key>.<name>`` after the
  last (``exp_avg``, ``exp_avg_sq``), with metadata ``optimizer``, ``config``,
  ``groups`` (per group ``lr_scale`` and ``weight_decay``) and ``reference``,
  as the other generators write their cases;
* cases with inputs of their own (``own_inputs`` in the metadata): the same
  keys plus ``init.<name>`` and ``grad.<step>.<name>``, and metadata ``tensors``
  (name, shape, group) and ``lrs`` (the base lr of every step);
* ``stable_adamw_large``: a tensor of 300,001 elements (1,172 blocks of 256,
  so its per-tensor reduction spans two 1,024-block segments and 74 partial
  workgroups) beside a small one. Its initial values and gradients are not
  stored: they come from the counter-based generator of tests/gpu/util.rs
  (SplitMix64; ``generated`` in the metadata), exact in f32 on both sides. Its
  parameters are stored at ``samples`` (fixed element indices) after every step,
  and its final state at the same indices; the small tensor is stored whole.

Every case records ``rms`` in its metadata: per step, per tensor, optimi's
stabilisation term ``sqrt(mean(g^2 / max(v, eps^2)))`` as a Python float, so a
test can tell the steps whose learning rate was divided by it (rms > 1).

At step s a group's lr is ``lrs[s - 1] * lr_scale``. optimi runs on the CPU in
float32. Run with the versions pinned in requirements.txt:

    python scripts/torch_fixtures/gen_optimi.py
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
from gen_adopt_sf import check_inputs  # noqa: E402

GOLDEN = 0x9E3779B97F4A7C15

# optimi.StableAdamW's defaults (optimi 0.3.3), lr aside.
STABLE_ADAMW_DEFAULTS = dict(
    betas=[0.9, 0.99],
    eps=1e-6,
    weight_decay=1e-2,
    decouple_lr=False,
    max_lr=None,
)

# Cases on the shared inputs: name -> (config overrides, groups as (lr_scale, weight_decay)). optimi applies
# its default weight decay to every group, so the default case decays both.
SHARED_CASES = {
    "stable_adamw_default": (dict(), [(1.0, 1e-2), (1.0, 1e-2)]),
    "stable_adamw_weight_decay": (
        dict(weight_decay=0.1, betas=[0.95, 0.999], eps=1e-8),
        [(1.0, 0.1), (2.0, 0.0)],
    ),
    # Fully decoupled decay: p *= 1 - (lr / max_lr) * wd, max_lr the schedule's peak, shared by both
    # groups while group 1 runs at half the lr.
    "stable_adamw_decouple_lr_groups": (
        dict(decouple_lr=True, max_lr=1e-2, weight_decay=5e-4),
        [(1.0, 5e-4), (0.5, 2e-4)],
    ),
}

CLIP_STEPS = 8


def clip_inputs():
    """Three tensors whose stabilisation terms behave differently, by construction:

    * ``spiky``: random gradients of scale 1, times 10 at steps 3 and 6: g^2 / v jumps past 1 there,
      so its lr is divided by rms;
    * ``calm``: one fixed direction whose scale shrinks by 0.7 each step: every past g^2 is larger than
      the present one, so v >= g^2 and rms <= 1 at every step (= 1 at the first, where v = g^2);
    * ``tiny``: gradients near 1e-8 with a third of them exactly 0, under eps = 1e-6: max(v, eps^2) is
      eps^2 almost everywhere, and rms stays far below 1.
    """
    rng = np.random.default_rng(base.SEED + 7)
    tensors = [("spiky", [40, 30], 0), ("calm", [513], 0), ("tiny", [77], 1)]
    init = {
        "spiky": (rng.standard_normal([40, 30]) * 0.1).astype(np.float32),
        "calm": (rng.standard_normal([513]) * 0.5).astype(np.float32),
        "tiny": (rng.standard_normal([77]) * 1.0).astype(np.float32),
    }
    direction = rng.standard_normal([513])
    grads = []
    for s in range(1, CLIP_STEPS + 1):
        spike = 10.0 if s in (3, 6) else 1.0
        tiny = rng.standard_normal([77]) * 1e-8
        tiny[rng.random([77]) < 1 / 3] = 0.0
        grads.append(
            {
                "spiky": (rng.standard_normal([40, 30]) * spike).astype(np.float32),
                "calm": (direction * 0.7**s).astype(np.float32),
                "tiny": tiny.astype(np.float32),
            }
        )
    return tensors, init, grads


LARGE = {
    "steps": 4,
    "numel": 300_001,
    "small": 100,
    # Powers of two, so the generated values are exact in f32 on both sides.
    "init_scale": 2.0**-2,
    "grad_scale": 2.0**-6,
    "init_seed": 11,
    "grad_seed": 5000,
    # Step 3's gradients are 8 times the others: that step's rms passes 1.
    "spike_step": 3,
    "spike": 8.0,
    "samples": 4096,
}


def splitmix_noise(seed: int, n: int, scale: float) -> np.ndarray:
    """tests/gpu/util.rs `noise`: element i is SplitMix64 of seed + (i + 1) * golden,
    its top 24 bits mapped to [-scale, scale); exact in f32 for a power-of-two scale."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(40)).astype(np.float64)
    return ((k / 2.0**24 * 2.0 - 1.0) * scale).astype(np.float32)


def large_inputs():
    cfg = LARGE
    tensors = [("big", [cfg["numel"]], 0), ("small", [cfg["small"]], 1)]
    init = {
        "big": splitmix_noise(cfg["init_seed"], cfg["numel"], cfg["init_scale"]),
        "small": splitmix_noise(cfg["init_seed"] + 1, cfg["small"], cfg["init_scale"]),
    }
    grads = []
    for s in range(1, cfg["steps"] + 1):
        scale = cfg["grad_scale"] * (cfg["spike"] if s == cfg["spike_step"] else 1.0)
        grads.append(
            {
                "big": splitmix_noise(cfg["grad_seed"] * s, cfg["numel"], scale),
                "small": splitmix_noise(cfg["grad_seed"] * s + 1, cfg["small"], scale),
            }
        )
    return tensors, init, grads


class ForLoopPath:
    """Counts the calls of optimi's for-loop implementation, to check that no step took another path."""

    def __init__(self):
        import optimi  # noqa: F401

        # optimi's package exports the function `stableadamw`, which hides the submodule of that name.
        module = sys.modules["optimi.stableadamw"]
        self.module = module
        self.original = module._single_stableadamw
        self.calls = 0

    def __enter__(self):
        def counted(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        self.module._single_stableadamw = counted
        return self

    def __exit__(self, *exc):
        self.module._single_stableadamw = self.original


def stable_adamw_reference() -> str:
    torch_version = torch.__version__.split("+")[0]
    return (
        f"torch-optimi=={importlib.metadata.version('torch-optimi')} "
        f"optimi.StableAdamW(foreach=False, triton=False, kahan_sum=False) torch=={torch_version}"
    )


def rms_of(grad: torch.Tensor, exp_avg_sq: torch.Tensor, eps_sq: torch.Tensor) -> float:
    """optimi's stabilisation term, recomputed with its own expression from the state it used."""
    return float(grad.pow(2).div_(exp_avg_sq.maximum(eps_sq)).mean().sqrt())


def run_stable_adamw(overrides, tensors, groups, init, grads, lrs):
    """Steps optimi's StableAdamW; returns the params after every step ({step: {name: array}}), the final
    state ({key: {name: array}}), the rms of every step ([{name: float}]) and the config."""
    from optimi import StableAdamW

    cfg = dict(STABLE_ADAMW_DEFAULTS, **overrides)
    params = {n: torch.nn.Parameter(torch.from_numpy(np.array(init[n], dtype=np.float32))) for n, *_ in tensors}
    torch_groups = [
        {"params": [params[n] for n, _s, g in tensors if g == gid], "weight_decay": wd}
        for gid, (_scale, wd) in enumerate(groups)
    ]
    opt = StableAdamW(
        torch_groups,
        lr=lrs[0],
        betas=tuple(cfg["betas"]),
        weight_decay=cfg["weight_decay"],
        eps=cfg["eps"],
        decouple_lr=cfg["decouple_lr"],
        max_lr=cfg["max_lr"],
        kahan_sum=False,
        foreach=False,
        triton=False,
    )
    trajectory, rms = {}, []
    with ForLoopPath() as path:
        for step in range(1, len(lrs) + 1):
            for gid, group in enumerate(opt.param_groups):
                group["lr"] = lrs[step - 1] * groups[gid][0]
            for n, p in params.items():
                p.grad = torch.from_numpy(np.array(grads[step - 1][n], dtype=np.float32))
            opt.step()
            trajectory[step] = {n: p.detach().numpy().copy() for n, p in params.items()}
            rms.append(
                {
                    n: rms_of(p.grad, opt.state[p]["exp_avg_sq"], opt.state[p]["eps_sq"])
                    for n, p in params.items()
                }
            )
        if path.calls != len(lrs) * len(opt.param_groups):
            raise RuntimeError(f"optimi took another path: {path.calls} for-loop calls")
    for group in opt.param_groups:
        if group["foreach"] or group["triton"] or group["kahan_sum"]:
            raise RuntimeError(f"optimi group settings changed: {group}")
    final = {}
    for n, p in params.items():
        state = opt.state[p]
        if state["kahan_comp"] is not None:
            raise RuntimeError("optimi kept a Kahan compensation for float32 parameters")
        for key in ("exp_avg", "exp_avg_sq"):
            final.setdefault(key, {})[n] = state[key].detach().numpy().copy()
    return trajectory, final, rms, cfg


def case_metadata(cfg, groups, rms, generator):
    return {
        "optimizer": "stable_adamw",
        "config": json.dumps(cfg),
        "groups": json.dumps([{"lr_scale": s, "weight_decay": wd} for s, wd in groups]),
        "reference": stable_adamw_reference(),
        "rms": json.dumps(rms),
        "generator": generator,
    }


def write_stable_adamw(out_dir: Path, root: Path, generator: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)

    init, grads = base.make_inputs()
    lrs = warmup_cosine(base.STEPS, peak=1e-2, floor=1e-3, warmup=4)
    check_inputs(root, init, grads, lrs)
    shared = [(n, shape, g) for n, shape, g, *_ in base.TENSORS]
    for case, (overrides, groups) in SHARED_CASES.items():
        trajectory, final, rms, cfg = run_stable_adamw(overrides, shared, groups, init, grads, lrs)
        out = {f"param.{s}.{n}": v for s, ps in trajectory.items() for n, v in ps.items()}
        out.update({f"state.{k}.{n}": v for k, vs in final.items() for n, v in vs.items()})
        save_numpy(out, out_dir / f"{case}.safetensors", case_metadata(cfg, groups, rms, generator))
        clipped = sum(r[n] > 1.0 for r in rms for n in r)
        print(f"wrote {case}: {len(out)} tensors, {clipped} (step, tensor) pairs clipped")

    # One tensor clipped at its spikes, one never, one under eps^2; group 1 at twice the lr, no decay.
    tensors, init, grads = clip_inputs()
    lrs = warmup_cosine(CLIP_STEPS, peak=1e-2, floor=1e-3, warmup=2)
    groups = [(1.0, 1e-2), (2.0, 0.0)]
    trajectory, final, rms, cfg = run_stable_adamw(dict(), tensors, groups, init, grads, lrs)
    spiky = [s + 1 for s, r in enumerate(rms) if r["spiky"] > 1.0]
    if not {3, 6} <= set(spiky) or any(r["calm"] > 1.0 for r in rms) or any(r["tiny"] > 1.0 for r in rms):
        raise RuntimeError(f"stable_adamw_clip_mixed: the clipping pattern is not the intended one: {rms}")
    out = {f"init.{n}": init[n] for n, *_ in tensors}
    out.update({f"grad.{s + 1}.{n}": grads[s][n] for s in range(CLIP_STEPS) for n, *_ in tensors})
    out.update({f"param.{s}.{n}": v for s, ps in trajectory.items() for n, v in ps.items()})
    out.update({f"state.{k}.{n}": v for k, vs in final.items() for n, v in vs.items()})
    meta = case_metadata(cfg, groups, rms, generator)
    meta["own_inputs"] = "true"
    meta["tensors"] = json.dumps([{"name": n, "shape": s, "group": g} for n, s, g in tensors])
    meta["lrs"] = json.dumps(lrs)
    save_numpy(out, out_dir / "stable_adamw_clip_mixed.safetensors", meta)
    print(f"wrote stable_adamw_clip_mixed: spiky clipped at steps {spiky}")

    # A tensor whose reduction spans several workgroups and segments.
    tensors, init, grads = large_inputs()
    lrs = warmup_cosine(LARGE["steps"], peak=1e-2, floor=1e-3, warmup=1)
    groups = [(1.0, 1e-2), (1.0, 0.0)]
    trajectory, final, rms, cfg = run_stable_adamw(dict(), tensors, groups, init, grads, lrs)
    if not rms[LARGE["spike_step"] - 1]["big"] > 1.0:
        raise RuntimeError(f"stable_adamw_large: the spike did not clip: {rms}")
    samples = np.sort(np.random.default_rng(base.SEED).choice(LARGE["numel"], LARGE["samples"], replace=False))
    out = {"samples": samples.astype(np.float32)}
    if not np.array_equal(out["samples"].astype(np.int64), samples):
        raise RuntimeError("sample indices are not exact in f32")
    for s, ps in trajectory.items():
        out[f"param.{s}.big"] = ps["big"][samples]
        out[f"param.{s}.small"] = ps["small"]
    for k, vs in final.items():
        out[f"state.{k}.big"] = vs["big"][samples]
        out[f"state.{k}.small"] = vs["small"]
    meta = case_metadata(cfg, groups, rms, generator)
    meta["tensors"] = json.dumps([{"name": n, "shape": s, "group": g} for n, s, g in tensors])
    meta["lrs"] = json.dumps(lrs)
    meta["generated"] = json.dumps(
        {k: LARGE[k] for k in ("init_scale", "grad_scale", "init_seed", "grad_seed", "spike_step", "spike", "samples")}
    )
    save_numpy(out, out_dir / "stable_adamw_large.safetensors", meta)
    print(f"wrote stable_adamw_large: rms per step {[round(r['big'], 4) for r in rms]}")


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures")
    args = parser.parse_args()

    torch.manual_seed(base.SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    generator = f"gen_optimi.py {pins('python', 'torch', 'numpy', 'safetensors')} torch-optimi=={importlib.metadata.version('torch-optimi')}"
    write_stable_adamw(args.out / "optimi_stable_adamw", root, generator)


if __name__ == "__main__":
    main()
