"""The inference benchmark runs end to end (tiny settings; speed itself is never asserted).

What is checked is what its figures stand on: both sides get the same weights and compute the
same logits, and every requested batch size gets a line with speeds and a ratio. Also the
boundary between the benchmarks and the tests: neither imports the other, and the benchmarks
run as modules of the `benchmarks` package (`python -m benchmarks.<name>`), not by editing
sys.path.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.torch_reference import PARITY_TOLERANCE

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path):
    """Every module an `import` or `from ... import` statement of the file names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def top_package_imported(path, package):
    return sorted(name for name in imported_modules(path) if name.split(".")[0] == package)


def edits_sys_path(path):
    """Whether the file calls a method of sys.path or assigns to it (insert, append, ...)."""
    def is_sys_path(node):
        return (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id == "sys")

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Attribute) and is_sys_path(node.value):
            return True  # sys.path.insert(...), sys.path.append(...), ...
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AugAssign)) and any(
                is_sys_path(target) or (isinstance(target, ast.Subscript)
                                        and is_sys_path(target.value)) for target in targets):
            return True
    return False


def test_the_boundary_checks_see_what_they_look_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nimport tests.helpers\nfrom benchmarks.common import ROOT\n"
                     "def f():\n    from tests import x\n    sys.path.insert(0, '.')\n")
    assert top_package_imported(probe, "tests") == ["tests", "tests.helpers"]
    assert top_package_imported(probe, "benchmarks") == ["benchmarks.common"]
    assert edits_sys_path(probe)
    probe.write_text("import sys\nsys.path[:0] = ['.']\n")
    assert edits_sys_path(probe)
    probe.write_text("import sys\nprint(sys.path)\nfrom .common import ROOT\n")
    assert not edits_sys_path(probe) and not top_package_imported(probe, "benchmarks")


def test_benchmarks_and_tests_do_not_import_each_other():
    benchmarks = sorted((ROOT / "benchmarks").glob("**/*.py"))
    tests = sorted((ROOT / "tests").glob("**/*.py"))
    assert len(benchmarks) > 10 and len(tests) > 20
    assert {path.name: top_package_imported(path, "tests") for path in benchmarks
            if top_package_imported(path, "tests")} == {}
    assert {path.name: top_package_imported(path, "benchmarks") for path in tests
            if top_package_imported(path, "benchmarks")} == {}


@pytest.mark.parametrize("package", ["digit_tasks", "store_emulators"])
def test_the_shared_packages_import_neither_side(package):
    # These serve both the benchmarks and the tests (their docstrings say why each is a third
    # package): importing either would tie them together again.
    shared = sorted((ROOT / package).glob("**/*.py"))
    assert shared
    imported = {path.name: top_package_imported(path, "tests")
                + top_package_imported(path, "benchmarks") for path in shared}
    assert {name: found for name, found in imported.items() if found} == {}


def test_no_benchmark_edits_sys_path():
    assert [path.name for path in sorted((ROOT / "benchmarks").glob("**/*.py"))
            if edits_sys_path(path)] == []


@pytest.mark.slow
def test_inference_benchmark_compares_the_same_function():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.inference", "--model", "resnest14d",
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


@pytest.mark.slow
def test_runtime_table_times_each_runtime_in_its_own_process_on_the_same_function():
    runtimes = ["saved_model", "ort_official", "ort_ours", "tflite_fp32"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.inference", "--model", "resnest14d",
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


@pytest.mark.slow
def test_serving_graph_candidates_compute_the_served_function():
    """The BatchNorm fold rewrites the frozen graph: its logits must still be the model's."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving_graph", "--model", "resnest14d",
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
    folded_pattern = r"\((\d+) convolution \+ BatchNorm pairs folded\)"
    folded = int(re.search(folded_pattern, result.stdout).group(1))
    assert folded == 3 + 4 * 4 + 4, result.stdout


@pytest.mark.slow
def test_predict_batch_benchmark_predicts_every_image_on_each_side():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.predict_batch", "--model", "resnest14d",
         "--size", "32", "--images", "6", "--workers", "1", "2", "--batch-size", "4",
         "--stores", "local", "gs"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^host CPU flags: \S", result.stdout, re.MULTILINE), result.stdout
    rows = re.findall(r"^(predict.*?)\s+(local|gs)\s+(-|\d+)\s+([\d.]+)\s+([\d.]+)\s+"
                      r"([\d.]+)x  ([\d/]+)$", result.stdout, re.MULTILINE)
    assert [(side.strip(), store, workers) for side, store, workers, *_ in rows] == [
        ("predict (streaming)", "local", "-"), ("predict-batch DirectRunner", "local", "1"),
        ("predict-batch DirectRunner", "local", "2"), ("predict-batch DirectRunner", "gs", "1"),
        ("predict-batch DirectRunner", "gs", "2")], result.stdout
    assert rows[0][5] == "1.00"  # the reference of the ratios
    for _, _, workers, seconds, speed, ratio, peaks in rows:
        assert float(seconds) > 0 and float(speed) > 0 and float(ratio) > 0
        # One peak per worker process, each at least TensorFlow's size.
        assert len(peaks.split("/")) == (1 if workers == "-" else int(workers)), peaks
        assert all(float(peak) > 100 for peak in peaks.split("/")), peaks


@pytest.mark.slow
def test_inference_benchmark_tables_every_keras_backend():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.inference", "--model", "resnest14d",
         "--size", "32", "--batches", "1", "2", "--rounds", "1", "--seconds", "0",
         "--keras-backends", "jax", "torch"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for parity in re.findall(r"keras backend \w+: max\|keras - torch\| / max\|torch\| = (\S+)",
                             out):
        assert float(parity) <= PARITY_TOLERANCE, out
    table = out[out.index("keras_resnest per Keras backend"):]
    rows = re.findall(r"^\s+(\d+) (.+?)\s+([\d.]+)\s+([\d.]+)x$", table, re.MULTILINE)
    assert [(int(batch), side.split()[0]) for batch, side, _, _ in rows] == [
        (batch, side) for batch in (1, 2)
        for side in ("tensorflow", "jax", "torch", "torch+compile", "official")], table
    for _, side, speed, ratio in rows:
        assert float(speed) > 0 and float(ratio) > 0, table
    assert all(ratio == "1.00" for _, side, _, ratio in rows if side.startswith("official"))


@pytest.mark.slow
def test_train_benchmark_times_every_step_against_the_official_model():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.train", "--model", "resnest14d", "--size", "32",
         "--batch", "2", "--steps", "1", "--rounds", "2", "--keras-backends", "jax", "torch"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^(keras .+?|official torch \(eager\))\s+([\d.]+) \([\d.]+-[\d.]+\)"
                      r"\s+([\d.]+)x\s+(\d+)%$", result.stdout, re.MULTILINE)
    assert [side for side, *_ in rows] == [
        "keras tensorflow (fused ops)", "keras tensorflow, Keras ops", "keras tensorflow + XLA",
        "keras jax (XLA)", "keras torch (eager)", "official torch (eager)"], result.stdout
    assert rows[-1][2] == "1.00"  # the reference of the ratios
    for _, speed, ratio, share in rows:
        assert float(speed) > 0 and float(ratio) > 0 and 0 < int(share) <= 100, result.stdout
    # The ceiling: resnest14d's step counted from the traced graph, against a GEMM rate.
    macs, peak, ceiling = re.search(
        r"([\d.]+) G multiply-accumulates per image and step; best float32 GEMM of this "
        r"machine (\d+) GFLOP/s -> ceiling ([\d.]+) images/s", result.stdout).groups()
    assert 0.1 < float(macs) < 1 and float(ceiling) > 0, result.stdout


@pytest.mark.slow
def test_train_benchmark_profiles_the_step_by_part_and_kind():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.train", "--model", "resnest14d", "--size", "32",
         "--batch", "2", "--profile"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^(forward|backward|optimizer)\s+(.+?)\s+([\d.]+) \(\s*([\d.]+)%\)"
                      r"\s+([\d.]+) \(\s*([\d.]+)%\)$", result.stdout, re.MULTILINE)
    kinds = {(part, kind) for part, kind, *_ in rows}
    assert {("forward", "batch norm"), ("backward", "batch norm"),
            ("backward", "convolution, input gradient"),
            ("backward", "convolution, weight gradient"),
            ("optimizer", "variable updates")} <= kinds, result.stdout
    for column in (3, 5):  # the shares of each step add up to its total
        assert abs(sum(float(row[column]) for row in rows) - 100) < 1, result.stdout


@pytest.mark.slow
def test_grouped_conv_benchmark_times_each_formulation_under_each_backend():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.grouped_conv", "--batch", "1", "--rounds", "1",
         "--calls", "1", "--backends", "jax", "torch"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^(\w+)\s+(\d+x\d+x\d+ g\d)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$",
                      result.stdout, re.MULTILINE)
    assert [row[0] for row in rows] == ["jax"] * 4 + ["torch"] * 4, result.stdout
    for _, _, per_group, native, ratio in rows:
        assert float(ratio) == pytest.approx(float(native) / float(per_group), abs=0.02)
