"""The commands are quiet by default: TensorFlow's start-up lines only with --verbose, and an
image decoder's complaints replaced by one line naming the file."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

# What TensorFlow's start-up and libjpeg write to stderr when they are not hidden.
CHATTER = ("absl", "cuda", "cpu_feature_guard", "E0000", "W0000", "I0000", "JPEG library",
           "Corrupt JPEG", "Premature end of JPEG")


def _run_command(args, tmp_path):
    # The user's own environment: no TF_CPP_MIN_LOG_LEVEL (conftest sets one for the suite).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    return subprocess.run(
        [sys.executable, "-m", "keras_resnest_cli", "predict", str(not_an_image),
         "--model", "resnest14d", "--weights", "none", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )


@pytest.mark.slow
def test_command_prints_only_its_own_error_line(tmp_path):
    result = _run_command([], tmp_path)
    assert result.returncode == 1  # a file that cannot be used: named, the others go on
    assert result.stderr.splitlines() == [
        f"keras-resnest predict: error: {tmp_path / 'notes.jpg'}: not a JPEG, PNG, GIF, BMP or "
        "WebP image"
    ]


@pytest.mark.slow
def test_verbose_shows_tensorflow_start_up_lines(tmp_path):
    result = _run_command(["--verbose"], tmp_path)
    assert result.returncode == 1
    # Without the capture, TensorFlow's C++ start-up log (absl / device lines) reaches stderr.
    assert len(result.stderr.splitlines()) > 1, result.stderr


@pytest.mark.parametrize("user_level", [None, "0", "3"])
def test_user_log_level_never_brings_start_up_lines_back(tmp_path, user_level):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    # A user error caught after TensorFlow's import: the command's only line.
    result = subprocess.run(
        [sys.executable, "-m", "keras_resnest_cli", "predict", "missing.jpg", "--model",
         "resnest14d"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "keras-resnest predict: error: no such image: missing.jpg"], result.stderr


@pytest.mark.parametrize("entry, argv, line", [
    (["-m", "keras_resnest"], ["predict", "missing.jpg", "--model", "resnest14d"],
     "keras-resnest predict: error: no such image: missing.jpg"),
    (["-m", "keras_resnest.training"], ["--model", "resnest51", "--dataset", "digits", "-o", "r"],
     "keras-resnest train: error: unknown model 'resnest51'"),
])
def test_python_dash_m_runs_the_same_quiet_command_line(tmp_path, entry, argv, line):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, *entry, *argv], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    [only] = result.stderr.splitlines()  # no TensorFlow start-up line before it
    assert only.startswith(line), result.stderr


def _jpeg_bytes():
    array = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _jpeg_files(folder):
    """(good, cut, damaged): a JPEG; its first 200 bytes (no image data, which libjpeg answers
    with "Improper call to JPEG library"); and one with a marker inside its image data
    ("Corrupt JPEG data", decoded anyway)."""
    data = _jpeg_bytes()
    good, cut, damaged = folder / "good.jpg", folder / "cut.jpg", folder / "damaged.jpg"
    good.write_bytes(data)
    cut.write_bytes(data[:200])
    inside = data.find(b"\xff\xda") + 200  # 200 bytes into the scan (the image data)
    damaged.write_bytes(data[:inside] + b"\xff\xc4\x00\x02" + data[inside + 4:])
    return good, cut, damaged


def test_predict_names_a_corrupt_jpeg_in_one_line(tmp_path):
    good, cut, _ = _jpeg_files(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "keras_resnest_cli", "predict", good.name, cut.name, "--model",
         "resnest14d", "--weights", "none"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "good.jpg"  # predicted all the same
    assert result.stderr.splitlines() == [
        "keras-resnest predict: error: cut.jpg: cannot decode the image (Truncated File Read)",
        "keras-resnest predict: 1 of 2 files could not be used (named above)"]


def test_calibration_names_corrupt_jpegs_without_decoder_chatter(tmp_path, capfd):
    import tensorflow as tf

    from keras_resnest.export import calibration

    good, cut, damaged = _jpeg_files(tmp_path)
    tf.config.list_physical_devices()  # TensorFlow's device start-up lines come out here
    capfd.readouterr()
    assert calibration.load_images([good, cut], 32).shape == (1, 32, 32, 3)
    assert calibration.load_images([good, damaged], 32).shape == (2, 32, 32, 3)
    err = capfd.readouterr().err
    assert not any(text in err for text in CHATTER), err
    # The unreadable file is named once and skipped; the damaged one is read as the served
    # graph's decoder reads it, without a word from libjpeg.
    assert err.splitlines() == [f"warning: {cut}: cannot decode the image (Truncated File Read); "
                                "skipped"]


@pytest.mark.parametrize("name", ["ResNeSt50", "create_model", "decode_predictions",
                                  "load_torch_state_dict"])
def test_public_names_resolve(name):
    import keras_resnest

    assert callable(getattr(keras_resnest, name))
    assert name in dir(keras_resnest)
