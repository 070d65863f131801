#!/usr/bin/env python3
"""Golden fixtures for weight averaging: torch.optim.swa_utils.AveragedModel with
get_ema_multi_avg_fn(decay) (EMA) and get_swa_multi_avg_fn() (SWA).

Writes, under tests/fixtures/averaging/ (or --out):

* ``inputs.safetensors``: the model's parameters at every update
  ``param.<update>.<name>`` for update 1..=N, and metadata ``tensors`` (name,
  shape), ``updates`` (N) and ``generator`` (the versions used).
* ``<case>.safetensors`` for every case below: the averaged parameters after
  every update ``avg.<update>.<name>``, with metadata ``mode`` ("ema" or
  "swa"), ``decay`` (EMA only) and ``reference``.

The trajectory is a random walk around a per-tensor offset, so that the averages
are large numbers updated by small steps (where lerp's rounding shows), with a
few exact repeats and one step that jumps by orders of magnitude.

AveragedModel copies the parameters at its first update and then calls
``torch._foreach_lerp_(avg, model, w)``: for EMA ``w = 1 - decay`` (a Python
float, which the float32 kernel receives rounded to float32), for SWA
``w = 1 / (n_averaged + 1)`` computed as a float32 tensor division of the int64
counter. Everything runs on the CPU in float32, one thread; the output is
deterministic (fixed seed, a writer with a stable header).

Run with the versions pinned in requirements.txt:

    python scripts/averaging_fixtures/gen_averaging.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixture_io import pins, save_numpy, version  # noqa: E402

UPDATES = 12
SEED = 20261201

# (name, shape, offset, walk scale)
TENSORS = [
    ("a", [1], 3.0, 1e-2),
    ("b", [7], -0.5, 1.0),
    ("c", [16, 16], 100.0, 1e-3),
    ("d", [1000], 0.0, 0.1),
    ("e", [4099], 1.0, 1e-4),
]

# name -> (mode, decay)
CASES = {
    "ema_default": ("ema", 0.999),
    "ema_0.9": ("ema", 0.9),
    # 1 - decay >= 0.5: torch's lerp takes its other branch, end - (end - start) * (1 - w).
    "ema_0.3": ("ema", 0.3),
    "ema_0": ("ema", 0.0),
    "ema_1": ("ema", 1.0),
    "swa": ("swa", None),
}


def make_trajectory() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    traj = []
    current = {}
    for name, shape, offset, scale in TENSORS:
        current[name] = (offset + rng.standard_normal(shape)).astype(np.float32)
    for u in range(UPDATES):
        if u > 0:
            for name, shape, _offset, scale in TENSORS:
                step = (rng.standard_normal(shape) * scale).astype(np.float32)
                if u == 4:
                    # The same parameters twice in a row: the average moves only towards them.
                    step[...] = 0.0
                if u == 7 and name == "d":
                    # One sudden jump of a few orders of magnitude.
                    step = step * np.float32(1e3)
                current[name] = (current[name] + step).astype(np.float32)
        traj.append({k: v.copy() for k, v in current.items()})
    return traj


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for name, shape, *_ in TENSORS:
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))


def run_case(mode: str, decay, traj) -> dict[str, np.ndarray]:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

    model = Model()
    fn = get_ema_multi_avg_fn(decay) if mode == "ema" else get_swa_multi_avg_fn()
    averaged = AveragedModel(model, multi_avg_fn=fn)
    out = {}
    for u, params in enumerate(traj, start=1):
        with torch.no_grad():
            for name, *_ in TENSORS:
                getattr(model, name).copy_(torch.from_numpy(params[name]))
        averaged.update_parameters(model)
        for name, *_ in TENSORS:
            out[f"avg.{u}.{name}"] = getattr(averaged.module, name).detach().numpy().copy()
    if int(averaged.n_averaged) != len(traj):
        raise RuntimeError("n_averaged does not count the updates")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[2]
    parser.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "averaging")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    torch_version = version("torch", local=False)
    traj = make_trajectory()
    inputs = {f"param.{u}.{name}": p[name] for u, p in enumerate(traj, start=1) for name, *_ in TENSORS}
    save_numpy(
        inputs,
        args.out / "inputs.safetensors",
        {
            "tensors": json.dumps([{"name": n, "shape": s} for n, s, *_ in TENSORS]),
            "updates": str(UPDATES),
            "generator": f"scripts/averaging_fixtures/gen_averaging.py {pins('torch', 'numpy', local=False)}",
        },
    )
    for case, (mode, decay) in CASES.items():
        fn = f"get_ema_multi_avg_fn({decay})" if mode == "ema" else "get_swa_multi_avg_fn()"
        meta = {
            "mode": mode,
            "reference": f"torch=={torch_version} torch.optim.swa_utils.AveragedModel(multi_avg_fn={fn}), CPU float32",
        }
        if decay is not None:
            meta["decay"] = repr(float(decay))
        save_numpy(run_case(mode, decay, traj), args.out / f"{case}.safetensors", meta)
        print(f"wrote {case}")


if __name__ == "__main__":
    main()
