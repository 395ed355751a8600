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


def test_serving_graph_candidates_compute_the_served_function():
    """The BatchNorm fold rewrites the frozen graph: its logits must still be the model's."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serving_graph.py"), "--model", "resnest14d",
         "--size", "64", "--batches", "1", "2", "--rounds", "1", "--seconds", "0.05",
         "--settings", "onednn"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^onednn\s+(\S+)\s+(\d+)\s+([\d.]+)\s+\S+\s+([\d.]+)x\s+(\S+)$",
                      result.stdout, re.MULTILINE)
    assert [(graph, int(batch)) for graph, batch, *_ in rows] == [
        (graph, batch) for batch in (1, 2)
        for graph in ("serving_default", "frozen", "frozen_bn_folded")], result.stdout
    for _, _, speed, ratio, parity in rows:
        assert float(speed) > 0 and float(ratio) > 0 and float(parity) <= 1e-5, result.stdout
    # resnest14d: stem 3 + 4 blocks x (conv1, split-attention groups 2, conv3) + 4 downsamples.
    folded = int(re.search(r"\((\d+) convolution \+ BatchNorm pairs folded\)", result.stdout).group(1))
    assert folded == 3 + 4 * 4 + 4, result.stdout
