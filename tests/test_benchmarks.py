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
