"""Tests of bench_torch_adamw.py that need no GPU: its model shapes match wgoptim-bench's, its arguments
parse, and without CUDA (or without torch) it says so and exits with status 0.

    python -m unittest discover -s scripts/bench_torch
"""

import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "bench_torch_adamw.py"
sys.path.insert(0, str(HERE))

import bench_torch_adamw as bench  # noqa: E402

try:
    import torch
except ImportError:
    torch = None


def run_script(*args, python_flags=()):
    # An empty CUDA_VISIBLE_DEVICES hides every GPU, so the no-CUDA path runs even on a GPU machine.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, *python_flags, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


class Shapes(unittest.TestCase):
    def test_gpt2_small_has_148_tensors_and_124m_parameters(self):
        t = bench.gpt2_small(1)
        self.assertEqual(len(t), 148)
        self.assertEqual(sum(bench.numel(s) for _, s in t), 124_439_808)

    def test_layouts_match_the_rust_bench(self):
        split = bench.shapes("16", 1_000_003)
        self.assertEqual(len(split), 16)
        self.assertEqual(sum(bench.numel(s) for s in split), 1_000_003)
        gpt2 = bench.shapes("gpt2", 1_000_000)
        self.assertEqual(len(gpt2), 148)
        # divisor round(sqrt(124.4)) = 11, as Layout::Gpt2 picks
        self.assertEqual(gpt2[0], [-(-50257 // 11), -(-768 // 11)])
        with self.assertRaises(ValueError):
            bench.shapes("1000", 10)

    def test_counts_parse_like_the_rust_bench(self):
        self.assertEqual(bench.parse_count("16M"), 16_000_000)
        self.assertEqual(bench.parse_count("64k"), 64_000)
        self.assertEqual(bench.parse_count("1.5G"), 1_500_000_000)
        for bad in ["", "M", "12Q", "-3", "1.5"]:
            with self.assertRaises(Exception, msg=bad):
                bench.parse_count(bad)


@unittest.skipIf(torch is None, "torch is not installed")
class OnTheCpu(unittest.TestCase):
    """The measuring loop and the report on torch's CPU device: everything but the CUDA events."""

    def test_every_optimizer_runs_and_reports_the_columns(self):
        args = bench.parse_args(
            ["--quick", "--sizes", "4K", "--tensors", "1,16", "--tensor-sweep-params", "4K",
             "--optimizers", "all", "--steps", "2", "--device", "cpu"]
        )
        results = bench.run(args, torch)
        self.assertEqual(len(results["cases"]), 2 * len(bench.OPTIMIZERS))
        self.assertEqual(results["skipped"], [])
        for c in results["cases"]:
            self.assertEqual(c["params"], 4000)
            self.assertEqual(c["measurement"]["steps"], 2)
            self.assertGreater(c["step_ms"], 0)
            self.assertAlmostEqual(c["gbps"], c["bytes_per_step"] / (c["step_ms"] * 1e6))
            self.assertIsNotNone(c["vs_copy"])
            self.assertAlmostEqual(c["time_vs_copy"] * c["vs_copy"], 1.0)
        by_name = {c["optimizer"]: c for c in results["cases"] if c["tensors"] == 1}
        # fp32 state: AdamW keeps m and v, AMSGrad adds v_max, momentum keeps one buffer.
        self.assertGreaterEqual(by_name["adamw"]["state_bytes_per_param"], 8)
        self.assertGreaterEqual(by_name["adamw_amsgrad"]["state_bytes_per_param"], 12)
        self.assertEqual(by_name["sgd"]["state_bytes_per_param"], 0)
        self.assertEqual(by_name["sgd_momentum"]["state_bytes_per_param"], 4)
        report = {
            "torch_version": torch.__version__,
            "date_utc": "2000-01-01 00:00",
            "adapter": {"name": "cpu", "cuda": None, "capability": "-"},
            "results": results,
        }
        text = bench.table(report)
        self.assertIn("| sgd_nesterov ", text)
        self.assertEqual(len(text.strip().splitlines()), 3 + 2 + len(results["cases"]))

    def test_models_above_the_cap_are_skipped_with_a_note(self):
        args = bench.parse_args(
            ["--sizes", "4K,8K", "--tensors", "1", "--tensor-sweep-params", "4K", "--max-params", "5K",
             "--steps", "1", "--device", "cpu"]
        )
        results = bench.run(args, torch)
        self.assertEqual([c["params"] for c in results["cases"]], [4000])
        self.assertEqual(len(results["skipped"]), 1)
        self.assertIn("--max-params", results["skipped"][0]["reason"])


class WithoutCuda(unittest.TestCase):
    def test_it_says_so_and_exits_cleanly(self):
        r = run_script("--quick")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("nothing to measure", r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_json_mode_reports_the_skip(self):
        r = run_script("--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["tool"], "bench_torch_adamw")
        self.assertIn("not", out["skipped"])

    def test_without_torch_it_says_so_and_exits_cleanly(self):
        # -S leaves site-packages, and so torch, off the path.
        r = run_script("--quick", python_flags=("-S",))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("torch is not installed", r.stderr)

    def test_bad_arguments_are_refused(self):
        r = run_script("--optimizers", "lamb")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown optimizer", r.stderr)


if __name__ == "__main__":
    unittest.main()
