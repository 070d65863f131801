#!/usr/bin/env python3
"""Converts between a PyTorch AdamW run and a wgoptim checkpoint, both ways.

A wgoptim checkpoint is a safetensors file (see `src/checkpoint.rs` and `docs/checkpoints.md`): entries
`param/<tensor>` and `state/<state>/<tensor>` (float32, the tensor's shape), and in the header's
`__metadata__` the keys `format` (`wgoptim-checkpoint`), `format_version` (`1`), `meta` (JSON:
optimizer kind and config, step, group table, tensor list, state names, schedule, extra, and a CRC-32 of
every entry's bytes) and `meta_crc32` (the CRC-32 of the `meta` string).

PyTorch side: the model's parameters as a name -> tensor mapping, in the order the optimizer received them
(the flattened order of `param_groups[*]["params"]`; for one group that is `model.named_parameters()`), and
the state_dict of a `torch.optim.AdamW` (or `Adam(decoupled_weight_decay=True)`). Carried over: every
parameter, `exp_avg`, `exp_avg_sq` (and `max_exp_avg_sq` with amsgrad), the step count, betas, eps, weight
decay, amsgrad and maximize. Parameter groups become wgoptim groups: group g's learning rate becomes
`lr_scale = lr_g / lr_0`, its weight decay and betas overrides where they differ from group 0's (eps,
amsgrad and maximize must be the same in every group, as wgoptim shares them); the learning rate
itself is not part of a wgoptim optimizer (it is passed to every step), so it is kept in the checkpoint's
`extra["torch"]` for the way back.

Command line:

    # PyTorch -> wgoptim: params.pt holds dict(model.named_parameters()) (torch.save), optim.pt the
    # optimizer's state_dict().
    python convert.py to-wgoptim --params params.pt --optim optim.pt --out run.safetensors
    # wgoptim -> PyTorch: writes the two files above; --lr replaces the stored base learning rate.
    python convert.py to-torch --checkpoint run.safetensors --params params.pt --optim optim.pt

As a module: `torch_to_checkpoint(named_params, state_dict, path)` and `checkpoint_to_torch(path)`.
The checkpoint side needs only numpy and safetensors; torch is imported where torch tensors are made.
"""

import argparse
import json
import os
import sys
import tempfile
import zlib

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

FORMAT = "wgoptim-checkpoint"
FORMAT_VERSION = 1
ADAM_STATES = ("exp_avg", "exp_avg_sq")


class ConversionError(ValueError):
    """The input cannot be represented on the other side."""


def _f32(array):
    """A C-contiguous little-endian float32 copy, the layout checkpoints store."""
    return np.ascontiguousarray(np.asarray(array, dtype="<f4"))


def write_checkpoint(path, meta, entries):
    """Writes `entries` (key -> numpy array) with the metadata `meta` (a dict, without checksums) to
    `path`, atomically: a temporary file in the same directory, flushed, then renamed."""
    entries = {k: (_f32(v) if v.dtype != np.uint8 else np.ascontiguousarray(v)) for k, v in entries.items()}
    meta = dict(meta)
    meta["checksums"] = {k: zlib.crc32(v.tobytes()) for k, v in entries.items()}
    text = json.dumps(meta, separators=(",", ":"), allow_nan=False)
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "meta": text,
        "meta_crc32": str(zlib.crc32(text.encode("utf-8"))),
    }
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt", dir=directory)
    os.close(fd)
    try:
        # mkstemp creates the file private; give it the mode a plain open would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        save_file(entries, tmp, metadata=header)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(path):
    """Reads a checkpoint: returns `(meta, entries)` after checking the format, version and every CRC."""
    with safe_open(path, framework="numpy") as f:
        header = f.metadata() or {}
        entries = {k: f.get_tensor(k) for k in f.keys()}
    if header.get("format") != FORMAT:
        raise ConversionError(f"{path}: not a wgoptim checkpoint")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise ConversionError(f"{path}: format version {header.get('format_version')}, expected {FORMAT_VERSION}")
    text = header.get("meta", "")
    if str(zlib.crc32(text.encode("utf-8"))) != header.get("meta_crc32"):
        raise ConversionError(f"{path}: the metadata's checksum does not match")
    meta = json.loads(text)
    if set(meta["checksums"]) != set(entries):
        raise ConversionError(f"{path}: the entries do not match the metadata's list")
    for k, v in entries.items():
        if zlib.crc32(np.ascontiguousarray(v).tobytes()) != meta["checksums"][k]:
            raise ConversionError(f"{path}: entry {k}: checksum does not match")
    return meta, entries


def _numpy(t):
    """A torch tensor (or array-like) as a float32 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach().to("cpu")
        import torch

        t = t.to(torch.float32).numpy()
    return _f32(t)


def torch_to_checkpoint(named_params, state_dict, path, extra=None):
    """Writes the wgoptim checkpoint of a PyTorch AdamW run to `path`.

    `named_params`: (name, tensor) pairs or a mapping, in the optimizer's flattened parameter order.
    `state_dict`: the optimizer's `state_dict()`."""
    named = list(named_params.items() if hasattr(named_params, "items") else named_params)
    groups = state_dict["param_groups"]
    if not groups:
        raise ConversionError("the optimizer has no parameter groups")
    order = [i for g in groups for i in g["params"]]
    if len(order) != len(named):
        raise ConversionError(f"{len(named)} named parameters for {len(order)} optimizer parameters")
    first = groups[0]
    for key in ("eps", "amsgrad", "maximize"):
        for g in groups[1:]:
            if tuple(np.atleast_1d(g[key])) != tuple(np.atleast_1d(first[key])):
                raise ConversionError(f"parameter groups differ in `{key}`; wgoptim shares it across groups")
    if first.get("decoupled_weight_decay", True) is False:
        raise ConversionError("this is Adam with coupled weight decay; convert AdamW")
    base_lr = float(first["lr"])
    if not base_lr > 0:
        raise ConversionError("group 0's learning rate must be > 0 (it is the base of the others' scales)")
    wd0 = float(first["weight_decay"])
    betas0 = [float(first["betas"][0]), float(first["betas"][1])]
    table = []
    group_of = {}
    for g_index, g in enumerate(groups):
        wd = float(g["weight_decay"])
        betas = [float(g["betas"][0]), float(g["betas"][1])]
        table.append(
            {
                "lr_scale": float(g["lr"]) / base_lr,
                "weight_decay": None if wd == wd0 else wd,
                "betas": None if betas == betas0 else betas,
                "momentum": None,
            }
        )
        for i in g["params"]:
            group_of[i] = g_index
    states = list(ADAM_STATES) + (["max_exp_avg_sq"] if first["amsgrad"] else [])
    state = state_dict["state"]
    steps = {float(_numpy(state[i]["step"]).reshape(-1)[0]) for i in order if i in state}
    if len(steps) > 1:
        raise ConversionError(f"parameters were stepped different numbers of times: {sorted(steps)}")
    step = int(steps.pop()) if steps else 0
    entries = {}
    tensors = []
    for index, (name, param) in zip(order, named):
        p = _numpy(param)
        shape = list(p.shape)
        tensors.append({"name": name, "shape": shape, "group": group_of[index]})
        entries[f"param/{name}"] = p
        s = state.get(index)
        if s is None and step > 0:
            raise ConversionError(f"parameter `{name}` has no optimizer state")
        for k in states:
            v = _numpy(s[k]) if s is not None else np.zeros(shape, dtype="<f4")
            if list(v.shape) != shape:
                raise ConversionError(f"`{k}` of `{name}` has shape {list(v.shape)}, the parameter {shape}")
            entries[f"state/{k}/{name}"] = v
    meta = {
        "optimizer": "adam",
        "config": {
            "betas": betas0,
            "eps": float(first["eps"]),
            "weight_decay": wd0,
            "decoupled_weight_decay": True,
            "amsgrad": bool(first["amsgrad"]),
            "maximize": bool(first["maximize"]),
        },
        "step": step,
        "groups": table,
        "tensors": tensors,
        "states": states,
        "schedule": None,
        "extra": dict(extra or {}, torch={"lr": base_lr}),
    }
    write_checkpoint(path, meta, entries)


def checkpoint_to_torch(path, lr=None):
    """Reads a wgoptim AdamW checkpoint; returns `(named_params, state_dict)` for `torch.optim.AdamW`:
    the parameters as an ordered name -> tensor dict (group 0's tensors first, then group 1's, ..., in
    checkpoint order: pass them to the optimizer in that order, one param group per wgoptim group) and
    the optimizer's state_dict. `lr` replaces the base learning rate stored by `torch_to_checkpoint`."""
    import torch

    meta, entries = read_checkpoint(path)
    if meta["optimizer"] != "adam" or not meta["config"].get("decoupled_weight_decay"):
        raise ConversionError(f"{path}: not an AdamW checkpoint (optimizer `{meta['optimizer']}`)")
    config = meta["config"]
    base_lr = lr if lr is not None else meta.get("extra", {}).get("torch", {}).get("lr")
    if base_lr is None:
        raise ConversionError(f"{path}: no learning rate stored; pass one")
    named = {}
    state = {}
    param_groups = []
    index = 0
    for g_index, g in enumerate(meta["groups"]):
        members = [t for t in meta["tensors"] if t["group"] == g_index]
        ids = []
        for t in members:
            name = t["name"]
            named[name] = torch.from_numpy(entries[f"param/{name}"].copy()).reshape(t["shape"])
            s = {"step": torch.tensor(float(meta["step"]), dtype=torch.float32)}
            for k in meta["states"]:
                s[k] = torch.from_numpy(entries[f"state/{k}/{name}"].copy()).reshape(t["shape"])
            if meta["step"] > 0:
                state[index] = s
            ids.append(index)
            index += 1
        wd = g["weight_decay"] if g["weight_decay"] is not None else config["weight_decay"]
        betas = g.get("betas") or config["betas"]
        param_groups.append(
            {
                "lr": base_lr * g["lr_scale"],
                "betas": tuple(betas),
                "eps": config["eps"],
                "weight_decay": wd,
                "amsgrad": config["amsgrad"],
                "maximize": config["maximize"],
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": None,
                "decoupled_weight_decay": True,
                "params": ids,
            }
        )
    return named, {"state": state, "param_groups": param_groups}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-wgoptim", help="PyTorch AdamW state -> wgoptim checkpoint")
    a.add_argument("--params", required=True, help="torch.save'd dict(model.named_parameters())")
    a.add_argument("--optim", required=True, help="torch.save'd optimizer.state_dict()")
    a.add_argument("--out", required=True, help="the checkpoint to write")
    b = sub.add_parser("to-torch", help="wgoptim checkpoint -> PyTorch AdamW state")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--params", required=True, help="where to torch.save the parameters")
    b.add_argument("--optim", required=True, help="where to torch.save the optimizer state_dict")
    b.add_argument("--lr", type=float, help="base learning rate (default: the one stored)")
    args = parser.parse_args(argv)
    import torch

    try:
        if args.command == "to-wgoptim":
            params = torch.load(args.params, map_location="cpu")
            optim = torch.load(args.optim, map_location="cpu")
            torch_to_checkpoint(params, optim, args.out)
        else:
            params, optim = checkpoint_to_torch(args.checkpoint, args.lr)
            torch.save(params, args.params)
            torch.save(optim, args.optim)
    except ConversionError as e:
        print(f"convert.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
