"""`make demo` as a newcomer runs it: the end-to-end job, through the console module."""
import os
import re
import subprocess
import sys

import pytest

# The lines the demo itself prints; anything else on stdout or stderr is someone's chatter
# (TensorFlow's start-up, the TFLite converter, the LiteRT interpreter, absl).
OWN_LINE = re.compile(
    r"keras-resnest demo: |training resnest14d on |epoch \d|\d+/\d+ - |evaluation on |"
    r"confusion matrix|\s+\d|saved |$|keras-resnest demo results|-+$|[a-zA-Z0-9 +-]+\s{2}\S")


def _user_environment():
    # The user's own environment: no TF_CPP_MIN_LOG_LEVEL (conftest sets one for the suite).
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_prints_only_its_own_lines(tmp_path):
    # `make demo`'s command, one epoch: train, evaluate, save, TF-Serving package, int8 TFLite.
    code = "import sys, keras_resnest_cli; sys.exit(keras_resnest_cli.demo(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "--epochs", "1", "-o", str(tmp_path / "demo")],
        capture_output=True, text=True, cwd=tmp_path, timeout=900, env=_user_environment())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "int8 vs Keras" in result.stdout, result.stdout
    assert (tmp_path / "demo" / "run" / "model.keras").is_file()
    assert (tmp_path / "demo" / "serving" / "digits" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "demo" / "digits_int8.tflite").is_file()
    # Nothing on stderr: no converter ("fully_quantize"), XNNPACK, absl or TensorFlow lines.
    assert result.stderr == "", result.stderr
    strangers = [line for line in result.stdout.splitlines() if not OWN_LINE.match(line)]
    assert strangers == [], result.stdout
    # A machine without a GPU trains on one device, and the first line says so and why.
    first = result.stdout.splitlines()[0]
    assert first.startswith("keras-resnest demo: one device (CPU, no GPU found)"), first
    assert "--strategy mirrored" in first, first
    assert re.search(r"^strategy\s+one device \(CPU", result.stdout, re.M), result.stdout
    assert re.search(r"^global batch\s+32 \(32 per replica\)", result.stdout, re.M)


def _strategy_line(args, tmp_path):
    """The demo's strategy line for `args`, chosen in a fresh process (a CPU split needs one)."""
    # keras_resnest_cli first, as `make demo` does: the package then defers TensorFlow.
    code = ("import sys, keras_resnest_cli; "
            "from keras_resnest.quiet_start import import_tensorflow_quietly; "
            "import_tensorflow_quietly(); from keras_resnest.commands import demo; "
            "args = demo._parse(sys.argv[1:]); "
            "strategy, line = demo._make_strategy(args.strategy, args.cpu_devices); "
            "print(type(strategy).__name__, strategy.num_replicas_in_sync, line, sep='|')")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300, env=_user_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr
    return result.stdout.strip().split("|")


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    ([], ["_DefaultDistributionStrategy", "1",
          "one device (CPU, no GPU found): --strategy mirrored for MirroredStrategy"]),
    (["--strategy", "none"], ["_DefaultDistributionStrategy", "1", "one device (CPU): "
                                                                    "--strategy none"]),
    (["--strategy", "mirrored"], ["MirroredStrategy", "2", "MirroredStrategy, 2 replicas "
                                  "(CPU:0, CPU:1): --strategy mirrored"]),
    (["--strategy", "mirrored", "--cpu-devices", "3"], ["MirroredStrategy", "3",
     "MirroredStrategy, 3 replicas (CPU:0, CPU:1, CPU:2): --strategy mirrored"]),
])
def test_one_device_by_default_without_gpus_and_mirrored_when_asked(tmp_path, args, expected):
    assert _strategy_line(args, tmp_path) == expected


def test_converter_and_interpreter_lines_are_dropped_and_errors_kept():
    from keras_resnest.quiet_start import TFLITE_CHATTER, captured_stderr, filtered_stderr

    # The lines the int8 conversion and the LiteRT interpreter wrote before the demo hid them.
    chatter = (b"fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, "
               b"output_inference_type: UINT8\n"
               b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    with captured_stderr() as capture:
        with filtered_stderr(drop=TFLITE_CHATTER):
            os.write(2, chatter + b"RuntimeError: TFLite conversion (int8) failed\n")
    assert capture.text == "RuntimeError: TFLite conversion (int8) failed\n"
