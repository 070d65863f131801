#!/usr/bin/env python3
"""Golden fixtures for crates/wgoptim-schedule.

Runs the reference schedulers (torch.optim.lr_scheduler, transformers.optimization, optax) with the
versions pinned in requirements.txt and writes, for every case, the learning rate (and momentum /
beta1 where the schedule cycles it) used at optimizer step k = 0, 1, ..., n-1:

* PyTorch and transformers: the value of ``get_last_lr()`` (and of the optimizer's momentum or
  betas[0]) after k calls of ``scheduler.step()``, each preceded by ``optimizer.step()`` as the
  PyTorch docs prescribe. The schedulers are stepped the ordinary way (no ``epoch`` argument), so
  the recursive ``get_lr`` forms are what the fixtures hold.
* optax: ``schedule(k)`` with 64-bit JAX enabled.
* ReduceLROnPlateau: the learning rate after each ``step(metric)`` call, for a fixed metric list.

Usage (from the repository root):
    python3 -m venv /tmp/sched-venv && /tmp/sched-venv/bin/pip install -r scripts/schedule_fixtures/requirements.txt
    /tmp/sched-venv/bin/python scripts/schedule_fixtures/generate.py

Output: crates/wgoptim-schedule/tests/fixtures/{torch,transformers,optax}.json
"""

import json
import math
import os
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from torch.optim import lr_scheduler as L  # noqa: E402
from transformers import optimization as T  # noqa: E402

warnings.filterwarnings("ignore")

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "wgoptim-schedule", "tests", "fixtures"
)


def versions():
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "optax": optax.__version__,
        "jax": jax.__version__,
    }


def make_opt(kind="sgd", lr=0.1):
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    if kind == "sgd":
        return torch.optim.SGD([p], lr=lr, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam([p], lr=lr, betas=(0.9, 0.999))
    raise ValueError(kind)


def momentum_of(opt):
    g = opt.param_groups[0]
    if "betas" in g:
        return float(g["betas"][0])
    return float(g["momentum"])


def run_torch(opt, sched, n, with_momentum=False, expect_raise_after=None):
    lrs, moms = [], []
    raises_at = None
    for k in range(n):
        if k > 0:
            opt.step()
            try:
                sched.step()
            except ValueError:
                raises_at = k
                break
        lrs.append(float(sched.get_last_lr()[0]))
        if with_momentum:
            moms.append(momentum_of(opt))
    out = {"lr": lrs}
    if with_momentum:
        out["momentum"] = moms
    if expect_raise_after is not None:
        assert raises_at is not None, "expected the scheduler to raise"
        out["raises_at"] = raises_at
    return out


def torch_cases():
    cases = []

    def add(name, params, res, reference):
        cases.append({"name": name, "reference": reference, "params": params, **res})

    base = 0.1
    for factor, total, n in [(0.25, 7, 20), (0.5, 0, 5)]:
        if total == 0:
            continue
        opt = make_opt(lr=base)
        s = L.ConstantLR(opt, factor=factor, total_iters=total)
        add(f"constant_lr_{factor}_{total}", {"kind": "constant_factor", "base_lr": base, "factor": factor,
            "total_iters": total}, run_torch(opt, s, n), "torch.optim.lr_scheduler.ConstantLR")

    for sf, ef, total, n in [(0.1, 1.0, 10, 30), (1.0, 0.05, 40, 60), (0.3333333333333333, 1.0, 5, 12)]:
        opt = make_opt(lr=base)
        s = L.LinearLR(opt, start_factor=sf, end_factor=ef, total_iters=total)
        add(f"linear_lr_{sf}_{ef}_{total}", {"kind": "linear_factor", "base_lr": base, "start_factor": sf,
            "end_factor": ef, "total_iters": total}, run_torch(opt, s, n), "torch.optim.lr_scheduler.LinearLR")

    for t_max, eta_min, n in [(50, 0.001, 130), (37, 0.0, 80), (1, 0.0, 6)]:
        opt = make_opt(lr=base)
        s = L.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
        add(f"cosine_annealing_{t_max}_{eta_min}", {"kind": "cosine_annealing", "base_lr": base, "t_max": t_max,
            "eta_min": eta_min}, run_torch(opt, s, n), "torch.optim.lr_scheduler.CosineAnnealingLR")

    for total, power, n in [(40, 2.0, 60), (25, 0.5, 40), (30, 1.0, 35)]:
        opt = make_opt(lr=base)
        s = L.PolynomialLR(opt, total_iters=total, power=power)
        add(f"polynomial_lr_{total}_{power}", {"kind": "polynomial_torch", "base_lr": base, "total_iters": total,
            "power": power}, run_torch(opt, s, n), "torch.optim.lr_scheduler.PolynomialLR")

    opt = make_opt(lr=base)
    s = L.StepLR(opt, step_size=7, gamma=0.5)
    add("step_lr_7_0.5", {"kind": "step", "base_lr": base, "step_size": 7, "gamma": 0.5}, run_torch(opt, s, 50),
        "torch.optim.lr_scheduler.StepLR")

    for ms, gamma in [([5, 12, 12, 30], 0.3), ([3, 40], 0.1)]:
        opt = make_opt(lr=base)
        s = L.MultiStepLR(opt, milestones=ms, gamma=gamma)
        add(f"multistep_lr_{'_'.join(map(str, ms))}", {"kind": "multistep", "base_lr": base, "milestones": ms,
            "gamma": gamma}, run_torch(opt, s, 50), "torch.optim.lr_scheduler.MultiStepLR")

    for gamma, n in [(0.97, 200), (0.5, 40)]:
        opt = make_opt(lr=base)
        s = L.ExponentialLR(opt, gamma=gamma)
        add(f"exponential_lr_{gamma}", {"kind": "exponential", "base_lr": base, "gamma": gamma},
            run_torch(opt, s, n), "torch.optim.lr_scheduler.ExponentialLR")

    for t0, tmult, eta_min, n in [(10, 2, 1e-4, 200), (13, 1, 0.0, 100), (3, 3, 0.01, 150)]:
        opt = make_opt(lr=base)
        s = L.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=tmult, eta_min=eta_min)
        add(f"cosine_warm_restarts_{t0}_{tmult}_{eta_min}", {"kind": "cosine_warm_restarts", "base_lr": base,
            "t_0": t0, "t_mult": tmult, "eta_min": eta_min}, run_torch(opt, s, n),
            "torch.optim.lr_scheduler.CosineAnnealingWarmRestarts")

    onecycle = [
        dict(optim="adam", max_lr=0.1, total_steps=100, pct_start=0.3, anneal_strategy="cos", cycle_momentum=True,
             base_momentum=0.85, max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False),
        dict(optim="sgd", max_lr=0.5, total_steps=120, pct_start=0.25, anneal_strategy="linear", cycle_momentum=True,
             base_momentum=0.8, max_momentum=0.9, div_factor=10.0, final_div_factor=100.0, three_phase=True),
        dict(optim="sgd", max_lr=0.05, total_steps=64, pct_start=0.4, anneal_strategy="cos", cycle_momentum=True,
             base_momentum=0.85, max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=True),
        dict(optim="adam", max_lr=0.01, total_steps=50, pct_start=0.1, anneal_strategy="linear",
             cycle_momentum=False, base_momentum=0.85, max_momentum=0.95, div_factor=5.0, final_div_factor=1e3,
             three_phase=False),
    ]
    for i, c in enumerate(onecycle):
        opt = make_opt(c["optim"], lr=base)
        kw = {k: v for k, v in c.items() if k != "optim"}
        s = L.OneCycleLR(opt, **kw)
        res = run_torch(opt, s, c["total_steps"] + 3, with_momentum=c["cycle_momentum"], expect_raise_after=True)
        add(f"one_cycle_{i}_{c['anneal_strategy']}_{'three' if c['three_phase'] else 'two'}",
            {"kind": "one_cycle", **kw}, res, "torch.optim.lr_scheduler.OneCycleLR")

    cyclic = [
        dict(optim="sgd", base_lr=0.001, max_lr=0.1, step_size_up=10, step_size_down=15, mode="triangular",
             gamma=1.0, cycle_momentum=True, base_momentum=0.8, max_momentum=0.9),
        dict(optim="sgd", base_lr=0.001, max_lr=0.1, step_size_up=8, step_size_down=None, mode="triangular2",
             gamma=1.0, cycle_momentum=True, base_momentum=0.8, max_momentum=0.9),
        dict(optim="adam", base_lr=0.0001, max_lr=0.01, step_size_up=6, step_size_down=9, mode="exp_range",
             gamma=0.99, cycle_momentum=True, base_momentum=0.85, max_momentum=0.95),
        dict(optim="adam", base_lr=0.002, max_lr=0.02, step_size_up=5, step_size_down=None, mode="triangular",
             gamma=1.0, cycle_momentum=False, base_momentum=0.8, max_momentum=0.9),
    ]
    for c in cyclic:
        opt = make_opt(c["optim"], lr=base)
        kw = {k: v for k, v in c.items() if k != "optim"}
        s = L.CyclicLR(opt, **kw)
        add(f"cyclic_{c['mode']}_{c['optim']}", {"kind": "cyclic", **kw},
            run_torch(opt, s, 120, with_momentum=c["cycle_momentum"]), "torch.optim.lr_scheduler.CyclicLR")

    # ReduceLROnPlateau: a metric that improves, stalls, improves a little (below the threshold), ...
    metrics = []
    v = 1.0
    for i in range(90):
        if i % 23 < 8:
            v *= 0.9
        elif i % 23 < 15:
            v *= 0.99995  # an improvement below a 1e-4 relative threshold
        else:
            v *= 1.001
        metrics.append(v)
    plateau = [
        dict(mode="min", factor=0.5, patience=3, threshold=1e-4, threshold_mode="rel", cooldown=2, min_lr=1e-3,
             eps=1e-8, metrics=metrics),
        dict(mode="max", factor=0.1, patience=2, threshold=0.01, threshold_mode="abs", cooldown=0, min_lr=0.0,
             eps=1e-8, metrics=[-m for m in metrics]),
        dict(mode="min", factor=0.5, patience=0, threshold=1e-4, threshold_mode="abs", cooldown=1, min_lr=0.0,
             eps=0.02, metrics=metrics[:40]),
        dict(mode="max", factor=0.3, patience=4, threshold=1e-3, threshold_mode="rel", cooldown=3, min_lr=1e-6,
             eps=1e-8, metrics=[math.sin(i / 5.0) for i in range(80)]),
    ]
    for i, c in enumerate(plateau):
        opt = make_opt(lr=base)
        kw = {k: v for k, v in c.items() if k != "metrics"}
        s = L.ReduceLROnPlateau(opt, **kw)
        lrs, bad, cool = [], [], []
        for m in c["metrics"]:
            opt.step()
            s.step(m)
            lrs.append(float(opt.param_groups[0]["lr"]))
            bad.append(int(s.num_bad_epochs))
            cool.append(int(s.cooldown_counter))
        add(f"plateau_{i}_{c['mode']}_{c['threshold_mode']}", {"kind": "plateau", "lr": base, **kw,
            "metrics": c["metrics"]}, {"lr": lrs, "num_bad_epochs": bad, "cooldown_counter": cool},
            "torch.optim.lr_scheduler.ReduceLROnPlateau")

    # SequentialLR: children see the step count since their milestone.
    opt = make_opt(lr=base)
    a = L.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=10)
    b = L.CosineAnnealingLR(opt, T_max=90, eta_min=1e-5)
    s = L.SequentialLR(opt, schedulers=[a, b], milestones=[10])
    add("sequential_linear_cosine", {"kind": "sequential", "milestones": [10], "children": [
        {"kind": "linear_factor", "base_lr": base, "start_factor": 0.1, "end_factor": 1.0, "total_iters": 10},
        {"kind": "cosine_annealing", "base_lr": base, "t_max": 90, "eta_min": 1e-5}]},
        run_torch(opt, s, 110), "torch.optim.lr_scheduler.SequentialLR")

    opt = make_opt(lr=base)
    a = L.ConstantLR(opt, factor=0.5, total_iters=5)
    b = L.ExponentialLR(opt, gamma=0.95)
    c = L.StepLR(opt, step_size=10, gamma=0.5)
    s = L.SequentialLR(opt, schedulers=[a, b, c], milestones=[8, 30])
    add("sequential_constant_exponential_step", {"kind": "sequential", "milestones": [8, 30], "children": [
        {"kind": "constant_factor", "base_lr": base, "factor": 0.5, "total_iters": 5},
        {"kind": "exponential", "base_lr": base, "gamma": 0.95},
        {"kind": "step", "base_lr": base, "step_size": 10, "gamma": 0.5}]},
        run_torch(opt, s, 70), "torch.optim.lr_scheduler.SequentialLR")
    return cases


def run_lambda(sched_fn, base, n, **kw):
    opt = make_opt(lr=base)
    s = sched_fn(opt, **kw)
    return run_torch(opt, s, n)


def transformers_cases():
    cases = []
    base = 3e-4

    def add(name, fn, params, n, **kw):
        ref = f"transformers.optimization.{fn.__name__}"
        cases.append({"name": name, "reference": ref, "params": {"base_lr": base, **params},
                      **run_lambda(fn, base, n, **kw)})

    add("constant", T.get_constant_schedule, {"kind": "constant"}, 20)
    add("constant_with_warmup_10", T.get_constant_schedule_with_warmup, {"kind": "hf_constant_warmup",
        "num_warmup_steps": 10}, 30, num_warmup_steps=10)
    add("constant_with_warmup_0", T.get_constant_schedule_with_warmup, {"kind": "hf_constant_warmup",
        "num_warmup_steps": 0}, 5, num_warmup_steps=0)
    for w, t in [(10, 100), (0, 50), (1, 20)]:
        add(f"linear_with_warmup_{w}_{t}", T.get_linear_schedule_with_warmup, {"kind": "hf_linear_warmup",
            "num_warmup_steps": w, "num_training_steps": t}, t + 10, num_warmup_steps=w, num_training_steps=t)
    for w, t, cyc in [(15, 120, 0.5), (10, 100, 1.5), (0, 60, 2.0), (5, 80, 0.25)]:
        add(f"cosine_with_warmup_{w}_{t}_{cyc}", T.get_cosine_schedule_with_warmup, {"kind": "hf_cosine_warmup",
            "num_warmup_steps": w, "num_training_steps": t, "num_cycles": cyc, "min_lr_rate": 0.0}, t + 10,
            num_warmup_steps=w, num_training_steps=t, num_cycles=cyc)
    add("cosine_with_min_lr_10_100_0.1", T.get_cosine_with_min_lr_schedule_with_warmup,
        {"kind": "hf_cosine_warmup", "num_warmup_steps": 10, "num_training_steps": 100, "num_cycles": 0.5,
         "min_lr_rate": 0.1}, 110, num_warmup_steps=10, num_training_steps=100, num_cycles=0.5, min_lr_rate=0.1)
    for w, t, cyc in [(10, 100, 1.0), (5, 90, 3.0)]:
        add(f"cosine_hard_restarts_{w}_{t}_{cyc}", T.get_cosine_with_hard_restarts_schedule_with_warmup,
            {"kind": "hf_cosine_hard_restarts", "num_warmup_steps": w, "num_training_steps": t, "num_cycles": cyc},
            t + 10, num_warmup_steps=w, num_training_steps=t, num_cycles=cyc)
    for w, t, end, power in [(10, 100, 1e-7, 1.0), (5, 60, 1e-5, 2.0), (0, 40, 0.0, 0.5)]:
        add(f"polynomial_decay_with_warmup_{w}_{t}_{power}", T.get_polynomial_decay_schedule_with_warmup,
            {"kind": "hf_polynomial_warmup", "num_warmup_steps": w, "num_training_steps": t, "lr_end": end,
             "power": power}, t + 10, num_warmup_steps=w, num_training_steps=t, lr_end=end, power=power)
    wsd = [
        (10, 20, 100, "linear", "cosine", 0.0, 0.5),
        (10, 30, 120, "cosine", "linear", 0.1, 0.5),
        (8, 25, 90, "1-sqrt", "1-sqrt", 0.05, 0.5),
        (0, 10, 40, "linear", "cosine", 0.2, 1.0),
        (12, 12, 60, "linear", "1-sqrt", 0.0, 0.5),
    ]
    for w, d, t, wt, dt, mr, cyc in wsd:
        add(f"wsd_{w}_{d}_{t}_{wt}_{dt}_{mr}", T.get_wsd_schedule, {"kind": "hf_wsd", "num_warmup_steps": w,
            "num_decay_steps": d, "num_training_steps": t, "warmup_type": wt, "decay_type": dt,
            "min_lr_ratio": mr, "num_cycles": cyc}, t + 10, num_warmup_steps=w, num_decay_steps=d,
            num_training_steps=t, warmup_type=wt, decay_type=dt, min_lr_ratio=mr, num_cycles=cyc)
    return cases


def optax_cases():
    cases = []

    def add(name, fn, params, n, ref):
        lrs = [float(fn(jnp.asarray(k, dtype=jnp.int64))) for k in range(n)]
        cases.append({"name": name, "reference": ref, "params": params, "lr": lrs})

    add("constant", optax.constant_schedule(0.02), {"kind": "constant", "base_lr": 0.02}, 10,
        "optax.constant_schedule")
    for init, end, steps, begin in [(0.0, 0.1, 20, 5), (0.1, 0.001, 50, 0)]:
        add(f"linear_{init}_{end}_{steps}_{begin}", optax.linear_schedule(init, end, steps, begin),
            {"kind": "optax_linear", "init_value": init, "end_value": end, "transition_steps": steps,
             "transition_begin": begin}, steps + begin + 10, "optax.linear_schedule")
    for init, end, power, steps, begin in [(1.0, 0.01, 3.0, 50, 10), (0.1, 0.0, 0.5, 40, 0)]:
        add(f"polynomial_{init}_{end}_{power}_{steps}_{begin}",
            optax.polynomial_schedule(init, end, power, steps, begin),
            {"kind": "optax_polynomial", "init_value": init, "end_value": end, "power": power,
             "transition_steps": steps, "transition_begin": begin}, steps + begin + 10, "optax.polynomial_schedule")
    for init, steps, alpha, exponent in [(0.1, 80, 0.05, 2.0), (0.3, 50, 0.0, 1.0)]:
        add(f"cosine_decay_{init}_{steps}_{alpha}_{exponent}",
            optax.cosine_decay_schedule(init, steps, alpha, exponent),
            {"kind": "optax_cosine_decay", "init_value": init, "decay_steps": steps, "alpha": alpha,
             "exponent": exponent}, steps + 10, "optax.cosine_decay_schedule")
    for init, peak, w, d, end, exponent in [(0.0, 0.1, 10, 100, 1e-3, 1.0), (1e-4, 0.05, 20, 150, 0.0, 2.0),
                                             (0.01, 0.02, 0, 60, 0.005, 0.5)]:
        add(f"warmup_cosine_decay_{init}_{peak}_{w}_{d}_{end}_{exponent}",
            optax.warmup_cosine_decay_schedule(init, peak, w, d, end, exponent),
            {"kind": "optax_warmup_cosine", "init_value": init, "peak_value": peak, "warmup_steps": w,
             "decay_steps": d, "end_value": end, "exponent": exponent}, d + 10,
            "optax.warmup_cosine_decay_schedule")
    join = optax.join_schedules(
        [optax.linear_schedule(0.0, 0.1, 10), optax.cosine_decay_schedule(0.1, 50, 0.1),
         optax.constant_schedule(0.01)], [10, 60])
    add("join_linear_cosine_constant", join, {"kind": "join", "boundaries": [10, 60], "children": [
        {"kind": "optax_linear", "init_value": 0.0, "end_value": 0.1, "transition_steps": 10,
         "transition_begin": 0},
        {"kind": "optax_cosine_decay", "init_value": 0.1, "decay_steps": 50, "alpha": 0.1, "exponent": 1.0},
        {"kind": "constant", "base_lr": 0.01}]}, 80, "optax.join_schedules")
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in [("torch", torch_cases), ("transformers", transformers_cases), ("optax", optax_cases)]:
        doc = {"generator": "scripts/schedule_fixtures/generate.py", "versions": versions(), "cases": fn()}
        path = os.path.join(OUT, f"{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
