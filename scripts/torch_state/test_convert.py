"""Tests of convert.py: a PyTorch AdamW state survives the trip to a wgoptim checkpoint and back exactly,
a run continued from the converted state matches the original run, and corrupted checkpoints are refused.
The tests that need numpy and safetensors, or torch, are skipped without them.

    python -m unittest discover -s scripts/torch_state
"""

import os
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
FIXTURE = HERE.parent.parent / "tests" / "fixtures" / "torch_resume" / "checkpoint.safetensors"

try:
    import convert
except ImportError:  # numpy or safetensors absent
    convert = None

try:
    import torch
except ImportError:
    torch = None


def small_run(steps, amsgrad=False):
    """A two-group AdamW run of `steps` steps on fixed gradients; returns (named params, optimizer)."""
    g = torch.Generator().manual_seed(3)
    names = ["w1", "w2", "b1"]
    params = {
        "w1": torch.nn.Parameter(torch.randn(4, 3, generator=g)),
        "w2": torch.nn.Parameter(torch.randn(2, 4, generator=g)),
        "b1": torch.nn.Parameter(torch.randn(4, generator=g)),
    }
    opt = torch.optim.AdamW(
        [
            {"params": [params["w1"], params["w2"]]},
            {"params": [params["b1"]], "weight_decay": 0.0, "lr": 5e-4, "betas": (0.8, 0.95)},
        ],
        lr=1e-3,
        amsgrad=amsgrad,
        foreach=False,
    )
    for s in range(steps):
        for n in names:
            params[n].grad = torch.randn(params[n].shape, generator=g)
        opt.step()
    return [(n, params[n]) for n in names], opt


@unittest.skipIf(convert is None, "numpy or safetensors is not installed")
class Format(unittest.TestCase):
    def test_committed_fixture_reads_and_checks(self):
        meta, entries = convert.read_checkpoint(str(FIXTURE))
        self.assertEqual(meta["optimizer"], "adam")
        self.assertEqual(meta["step"], 6)
        self.assertEqual(meta["states"], ["exp_avg", "exp_avg_sq"])
        for t in meta["tensors"]:
            self.assertEqual(list(entries[f"param/{t['name']}"].shape), t["shape"])

    def test_corrupted_bytes_are_refused(self):
        data = bytearray(FIXTURE.read_bytes())
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.safetensors")
            for at in (len(data) - 3, 200):
                bad = bytearray(data)
                bad[at] ^= 0x01
                Path(path).write_bytes(bytes(bad))
                with self.assertRaises(Exception):
                    convert.read_checkpoint(path)

    def test_written_metadata_is_checksummed_json(self):
        import numpy as np

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.safetensors")
            meta = {"optimizer": "adam", "config": {}, "step": 1, "groups": [], "tensors": [], "states": []}
            convert.write_checkpoint(path, meta, {"param/x": np.arange(3, dtype=np.float32)})
            back, entries = convert.read_checkpoint(path)
            self.assertEqual(back["step"], 1)
            self.assertEqual(list(back["checksums"]), ["param/x"])
            self.assertEqual(entries["param/x"].tolist(), [0.0, 1.0, 2.0])
            self.assertEqual(sorted(os.listdir(d)), ["c.safetensors"])  # no temporary file left


@unittest.skipIf(convert is None or torch is None, "torch, numpy or safetensors is not installed")
class RoundTrip(unittest.TestCase):
    def convert_both_ways(self, amsgrad):
        named, opt = small_run(3, amsgrad)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "run.safetensors")
            convert.torch_to_checkpoint(named, opt.state_dict(), path)
            meta, _ = convert.read_checkpoint(path)
            back_params, back_state = convert.checkpoint_to_torch(path)
        return named, opt, meta, back_params, back_state

    def test_state_survives_exactly(self):
        for amsgrad in (False, True):
            named, opt, meta, back_params, back_state = self.convert_both_ways(amsgrad)
            self.assertEqual(meta["step"], 3)
            self.assertEqual(
                meta["groups"][1], {"lr_scale": 0.5, "weight_decay": 0.0, "betas": [0.8, 0.95], "momentum": None}
            )
            self.assertEqual(meta["groups"][0]["weight_decay"], None)
            self.assertEqual([t["group"] for t in meta["tensors"]], [0, 0, 1])
            self.assertEqual(list(back_params), [n for n, _ in named])
            original = opt.state_dict()
            for i, (n, p) in enumerate(named):
                self.assertTrue(torch.equal(back_params[n], p.detach()), n)
                for k, v in original["state"][i].items():
                    self.assertTrue(torch.equal(back_state["state"][i][k], v), (n, k))
            for g, h in zip(original["param_groups"], back_state["param_groups"]):
                for k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "params"):
                    self.assertEqual(tuple(np_list(g[k])), tuple(np_list(h[k])), k)

    def test_continuing_from_the_converted_state_matches(self):
        named, opt, _, back_params, back_state = self.convert_both_ways(False)
        params = {n: torch.nn.Parameter(t.clone()) for n, t in back_params.items()}
        resumed = torch.optim.AdamW(
            [{"params": [params["w1"], params["w2"]]}, {"params": [params["b1"]]}], lr=1.0, foreach=False
        )
        resumed.load_state_dict(back_state)
        g = torch.Generator().manual_seed(11)
        for _ in range(2):
            for n, p in named:
                grad = torch.randn(p.shape, generator=g)
                p.grad = grad.clone()
                params[n].grad = grad.clone()
            opt.step()
            resumed.step()
        for n, p in named:
            self.assertTrue(torch.equal(params[n].detach(), p.detach()), n)

    def test_mismatched_names_are_refused(self):
        named, opt = small_run(1)
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(convert.ConversionError):
                convert.torch_to_checkpoint(named[:2], opt.state_dict(), os.path.join(d, "x.safetensors"))


def np_list(x):
    return x if isinstance(x, (list, tuple)) else [x]


if __name__ == "__main__":
    unittest.main()
