"""Every command ends a foreseeable error with one line on stderr and exit code 2: the network
off (a failed download, an unreachable server), an output under a regular file (CI runs as
root, so permission bits alone would not stop a write), a cache that cannot be written.

The commands run in this process (`keras_resnest.commands.main.main`), so TensorFlow is
imported once; one test runs the console command itself, as a user does, to see no traceback
reaches the terminal.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_resnest.commands import main as cli
from keras_resnest.commands import train as train_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network: the weights mirror and the Hub on a port bound but not listening (every
    connection is refused), an empty Keras cache; a small image and a regular file to put
    outputs under."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("KERAS_RESNEST_WEIGHTS_URL", f"{url}/weights")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save("img.png")
    Path("blocker").write_text("a regular file")
    Path("weights.npz").write_bytes(b"")
    yield url
    closed.close()


def one_line_error(argv, capsys):
    """Runs `keras-resnest ARGV`; returns its one stderr line (asserting exit 2, one line)."""
    code = cli.main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    assert lines[0].startswith(f"keras-resnest {argv[0]}: error: "), lines[0]
    return lines[0]


DOWNLOAD_FAILED = "downloading gluon_resnest14-9c8fe254.pth (resnest14d) failed; expected"
UNDER_A_FILE = "is a file; expected a path whose folders are directories or do not exist yet"


@pytest.mark.parametrize("argv, expected", [
    (["predict", "img.png", "--model", "resnest14d", "--weights", "imagenet"], DOWNLOAD_FAILED),
    (["export", "--model", "resnest14d", "--format", "tflite", "-o", "m.tflite"],
     DOWNLOAD_FAILED),
    (["train", "--model", "resnest14d", "--weights", "imagenet", "--dataset", "digits",
      "-o", "run"], DOWNLOAD_FAILED),
    (["predict-batch", "--input", "img.png", "--output", "out", "--model", "resnest14d",
      "--weights", "imagenet"], DOWNLOAD_FAILED),
    (["serve-request", "img.png", "--port", "{port}"], "UNAVAILABLE"),
    (["serve-request", "img.png", "--rest", "--port", "{port}"], "Connection refused"),
], ids=["predict", "export", "train", "predict-batch", "serve-request", "serve-request-rest"])
def test_the_network_off(offline, capsys, argv, expected):
    port = offline.rsplit(":", 1)[1]
    line = one_line_error([arg.format(port=port) for arg in argv], capsys)
    assert expected in line


@pytest.mark.parametrize("argv, expected", [
    (["export", "--model", "resnest14d", "--weights", "none", "--format", "tflite",
      "-o", "blocker/m.tflite"], "-o blocker/m.tflite: cannot be created because"),
    (["export", "--model", "resnest14d", "--weights", "none", "--format", "serving",
      "-o", "blocker/models"], UNDER_A_FILE),
    (["export", "--model", "resnest14d", "--weights", "none", "--format", "serving",
      "-o", "blocker"], UNDER_A_FILE),
    (["convert", "weights.npz", "--model", "resnest14d", "-o", "blocker/w.weights.h5"],
     UNDER_A_FILE),
    (["predict-batch", "--input", "img.png", "--output", "blocker/out", "--model",
      "resnest14d", "--weights", "none"], UNDER_A_FILE),
    (["train", "--model", "resnest14d", "--dataset", "digits", "-o", "blocker/run"],
     "is not writable (Not a directory)"),
], ids=["export-tflite", "export-serving", "export-serving-root", "convert", "predict-batch",
        "train"])
def test_an_output_under_a_regular_file(offline, capsys, argv, expected):
    assert expected in one_line_error(argv, capsys)
    assert Path("blocker").read_text() == "a regular file"


def test_a_cache_under_a_regular_file(offline, capsys, monkeypatch):
    """The download itself cannot be written: KERAS_HOME lies under a file."""
    monkeypatch.setenv("KERAS_HOME", "blocker/keras_home")
    line = one_line_error(["predict", "img.png", "--model", "resnest14d", "--weights",
                           "imagenet"], capsys)
    assert "cannot create a folder there because" in line and "blocker is a file" in line


def test_an_os_error_of_the_system_names_its_path():
    error = PermissionError(13, "Permission denied", "/srv/out.tflite")
    assert cli.describe_os_error(error) == "/srv/out.tflite: Permission denied (errno EACCES)"
    assert cli.describe_os_error(FileNotFoundError("x.png: no such image")) == (
        "x.png: no such image")


def test_train_takes_weights_none_as_every_command_does():
    parser = cli.build_parser()
    for value in ("none", "None", "random"):
        args = parser.parse_args(["train", "--model", "resnest14d", "--dataset", "digits",
                                  "--weights", value, "-o", "run"])
        assert args.weights is None
    assert parser.parse_args(["train", "--model", "resnest14d", "--dataset", "digits",
                              "--weights", "imagenet", "-o", "run"]).weights == "imagenet"


@pytest.mark.parametrize("requested, cpu_devices, workers, expected", [
    ("auto", 2, 0, "mirrored"),   # the CPU split for replicas: train on them
    ("auto", None, 0, "auto"),    # one device without GPUs, all GPUs with them
    ("auto", 1, 0, "auto"),
    ("auto", 2, 2, "auto"),       # TF_CONFIG: multi-worker, as auto says
    ("none", 2, 0, "none"),
    ("mirrored", 4, 0, "mirrored"),
])
def test_cpu_devices_with_auto_trains_on_the_split(requested, cpu_devices, workers, expected):
    assert train_cli.strategy_name(requested, cpu_devices, workers) == expected


@pytest.mark.slow
def test_the_console_command_prints_one_line_and_no_traceback(offline):
    """As a user runs it: a fresh interpreter, the console script's module, stderr as is."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="0")
    result = subprocess.run(
        [sys.executable, "-m", "keras_resnest_cli", "predict", "img.png", "--model",
         "resnest14d", "--weights", "imagenet"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert DOWNLOAD_FAILED in result.stderr
