"""`make demo` as a newcomer runs it: the end-to-end job, through the console module."""
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_prints_only_its_own_lines(tmp_path):
    # `make demo`'s command, one epoch: train, evaluate, save, TF-Serving package, int8 TFLite.
    code = "import sys, keras_resnest_cli; sys.exit(keras_resnest_cli.demo(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "--epochs", "1", "-o", str(tmp_path / "demo")],
        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "int8 vs Keras" in result.stdout, result.stdout
    assert (tmp_path / "demo" / "run" / "model.keras").is_file()
    assert (tmp_path / "demo" / "digits_int8.tflite").is_file()
    assert "Traceback" not in result.stderr, result.stderr
