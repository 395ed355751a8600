"""The inference benchmark runs end to end (tiny settings; speed itself is never asserted).

What is checked is what its figures stand on: both sides get the same weights and compute the
same logits, and every requested batch size gets a line with speeds and a ratio.
"""
import re
import subprocess
import sys
from pathlib import Path

from tests.torch_reference import PARITY_TOLERANCE

ROOT = Path(__file__).resolve().parents[1]


def test_inference_benchmark_compares_the_same_function():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference.py"), "--model", "resnest14d",
         "--size", "64", "--batches", "1", "2", "--rounds", "2", "--seconds", "0.05"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    parity = float(re.search(r"max\|keras - torch\| / max\|torch\| = (\S+)", out).group(1))
    assert parity <= PARITY_TOLERANCE, out
    macs = float(re.search(r"([\d.]+) G multiply-accumulates per image", out).group(1))
    assert 0.05 < macs < 0.5, out  # resnest14d at 64x64: about 0.2 G
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x \(", out, re.MULTILINE)
    assert [int(row[0]) for row in rows] == [1, 2], out
    for _, keras_speed, torch_speed, ratio in rows:
        assert float(ratio) > 0 and float(keras_speed) > 0 and float(torch_speed) > 0


def test_runtime_table_times_each_runtime_in_its_own_process_on_the_same_function():
    runtimes = ["saved_model", "ort_official", "ort_ours", "tflite_fp32"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference.py"), "--model", "resnest14d",
         "--size", "64", "--batches", "1", "2", "--rounds", "2", "--seconds", "0.05",
         "--runtimes", *runtimes],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("\nruntime "):]
    rows = {line.split()[0]: line for line in table.splitlines()[2:] if line.strip()}
    assert list(rows) == runtimes, table
    for name, line in rows.items():
        speeds = [float(v) for v in re.findall(r"([\d.]+) \([\d.]+-[\d.]+\)", line)]
        ratios = [float(v) for v in re.findall(r" ([\d.]+)x ", line)]
        # The TFLite export has a fixed batch of 1: its batch-2 cell is "-".
        assert len(speeds) == len(ratios) == (1 if name == "tflite_fp32" else 2), line
        assert min(speeds) > 0 and min(ratios) > 0, line
        # Every runtime computes the same function (the SavedModel's probabilities included).
        parity = float(re.search(r" (\d\.\de[-+]\d+) ", line).group(1))
        assert parity <= 1e-5, line
    assert " 1.00x " in rows["ort_official"]  # the reference of the ratios
