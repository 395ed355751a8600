"""The commands are quiet by default: TensorFlow's start-up lines only with --verbose."""
import os
import subprocess
import sys

import pytest


def _run_command(args, tmp_path):
    # The user's own environment: no TF_CPP_MIN_LOG_LEVEL (conftest sets one for the suite).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    return subprocess.run(
        [sys.executable, "-m", "keras_resnest.cli", "predict", str(not_an_image),
         "--model", "resnest14d", "--weights", "none", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )


@pytest.mark.slow
def test_command_prints_only_its_own_error_line(tmp_path):
    result = _run_command([], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"keras-resnest predict: error: {tmp_path / 'notes.jpg'}: not an image PIL can read"
    ]


@pytest.mark.slow
def test_verbose_shows_tensorflow_start_up_lines(tmp_path):
    result = _run_command(["--verbose"], tmp_path)
    assert result.returncode == 2
    # Without the capture, TensorFlow's C++ start-up log (absl / device lines) reaches stderr.
    assert len(result.stderr.splitlines()) > 1, result.stderr


def test_import_does_not_load_tensorflow():
    code = "import sys, keras_resnest; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("name", ["ResNeSt50", "create_model", "decode_predictions",
                                  "load_torch_state_dict"])
def test_public_names_resolve(name):
    import keras_resnest

    assert callable(getattr(keras_resnest, name))
    assert name in dir(keras_resnest)
