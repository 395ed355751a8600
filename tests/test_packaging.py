"""A user's install runs every command: the wheel in a fresh virtual environment, as in the README.

Our own .venv holds the test extra (torch, the official resnest) and would hide a missing
dependency, so this module builds the wheel, installs it into a new virtual environment that
holds only the dependencies the wheel declares (`tests/helpers/linked_venv.py`: hard links to
.venv's installed files, checked complete by `pip check`, instead of 2.5 GB of copies) and runs
each `keras-resnest` command from outside the repository on tiny settings. The TF-Serving
request goes to an in-process stand-in for TF-Serving's Predict API
(tests/helpers/export_helpers.py), as no TF-Serving binary exists here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import export_helpers as helpers
from tests.helpers import linked_venv, scratch

pytestmark = pytest.mark.slow  # the whole file: see `make test-fast`

REPO = Path(__file__).resolve().parent.parent
README_INSTALL = "pip install keras-resnest"
# What a wheel must not carry from a developer's checkout.
NOT_PACKAGED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    "runs",
    "demo_output",
)
COMMAND_TIMEOUT = 600


class UserEnvironment:
    """A fresh virtual environment with the built wheel installed, and a working folder."""

    def __init__(self, root):
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        self.bin = root / "venv" / "bin"
        # A user's shell: none of the suite's settings, a private Keras cache.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "VIRTUAL_ENV")
        }
        self.env["KERAS_HOME"] = str(root / "keras_home")
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"

    def run(self, *args, check=True):
        result = subprocess.run(
            [str(self.bin / "keras-resnest"), *map(str, args)],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if check:
            assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
            # Quiet by default: nothing of TensorFlow's C++ start-up reaches the user.
            assert "absl::InitializeLog" not in result.stderr, result.stderr
            assert "cpu_feature_guard" not in result.stderr, result.stderr
        return result


def _build_wheel(destination):
    source = destination / "source"
    shutil.copytree(REPO, source, ignore=NOT_PACKAGED)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(destination),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = destination.glob("keras_resnest-*.whl")
    return wheel


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(README_INSTALL)}$", readme, re.MULTILINE), (
        f"the README no longer documents `{README_INSTALL}`: update this test with it"
    )
    with scratch.module_folder(tmp_path_factory, "user") as root:
        wheel = _build_wheel(root)
        # The README's command, with the wheel standing in for the package index's copy and
        # its dependencies linked from .venv.
        linked_venv.create(root / "venv", wheel)
        yield UserEnvironment(root)


def _write_image(path, seed, size=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(helpers.natural_image(size, size, seed)).save(path)
    return path


@pytest.fixture(scope="module")
def image_folder(user):
    """DIR/train/<class>/*.png: two classes of twelve small images."""
    root = user.work / "photos"
    for label, name in enumerate(("cats", "dogs")):
        for index in range(12):
            _write_image(root / "train" / name / f"{index}.png", seed=100 * label + index)
    return root


def test_install_brings_no_test_only_package(user):
    installed = subprocess.run(
        [str(user.bin / "pip"), "list", "--format=json"], check=True, capture_output=True, text=True
    ).stdout
    names = {package["name"].lower() for package in json.loads(installed)}
    assert {"tensorflow", "keras", "tensorflow-serving-api", "ai-edge-litert"} <= names
    assert not names & {"torch", "resnest", "pytest"}


def test_the_linked_environment_gets_what_requirements_close_over_and_no_more():
    closure = linked_venv.dependency_closure(["keras>=3"])
    assert {"keras", "numpy", "h5py"} <= set(closure)  # keras and its own requirements
    assert not {"tensorflow", "torch", "pytest"} & set(closure)
    with pytest.raises(RuntimeError, match="is not installed"):
        linked_venv.dependency_closure(["no-such-distribution-anywhere"])
    with pytest.raises(RuntimeError, match="is not met"):
        linked_venv.dependency_closure(["keras<1"])


def test_convert_then_predict(user, tmp_path):
    import torch

    from tests.helpers import torch_reference as ref

    checkpoint = user.work / "resnest14d.pth"
    torch.save(ref.build_randomized("resnest14d").state_dict(), checkpoint)
    converted = user.run(
        "convert", checkpoint, "--model", "resnest14d", "-o", "resnest14d.weights.h5"
    )
    assert "parameters" in converted.stdout and (user.work / "resnest14d.weights.h5").is_file()
    image = _write_image(user.work / "cat.png", seed=1, size=80)
    predicted = user.run(
        "predict",
        image,
        "--model",
        "resnest14d",
        "--weights",
        "resnest14d.weights.h5",
        "--top",
        "3",
    )
    assert len(re.findall(r"^  [123]\. \d\.\d{4}  ", predicted.stdout, re.MULTILINE)) == 3


@pytest.fixture(scope="module")
def digits_run(user):
    user.run(
        "train",
        "--model",
        "resnest14d",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "3",
        "--batch-size",
        "16",
        "--deterministic",
        "-o",
        "runs/digits",
    )
    return user.work / "runs" / "digits"


def test_train_on_the_digits_deterministically(digits_run):
    evaluation = json.loads((digits_run / "evaluation.json").read_text())
    assert len(evaluation["class_names"]) == 10
    assert (digits_run / "model.keras").is_file()
    assert any((digits_run / "logs").iterdir())  # TensorBoard logs were written


def test_train_on_an_image_folder(user, image_folder):
    user.run(
        "train",
        "--model",
        "resnest14d",
        "--data",
        image_folder,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "-o",
        "runs/photos",
    )
    class_names = json.loads((user.work / "runs" / "photos" / "class_names.json").read_text())
    assert class_names == ["cats", "dogs"]


def test_predict_with_the_trained_model(user, digits_run):
    image = _write_image(user.work / "digit.png", seed=2, size=64)
    result = user.run("predict", image, "--weights", digits_run / "model.keras", "--top", "2")
    class_names = json.loads((digits_run / "class_names.json").read_text())
    named = re.findall(r"^  [12]\. \d\.\d{4}  (\S+)", result.stdout, re.MULTILINE)
    assert len(named) == 2 and set(named) <= set(class_names), result.stdout


def test_export_saved_model(user, digits_run):
    user.run(
        "export",
        "--weights",
        digits_run / "model.keras",
        "--format",
        "saved_model",
        "-o",
        "exported/saved_model",
    )
    assert (user.work / "exported" / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize("quantize", ["none", "fp16", "dynamic", "int8"])
def test_export_tflite(user, digits_run, image_folder, quantize):
    output = user.work / "exported" / f"digits_{quantize}.tflite"
    calibration = ["--calibration", image_folder / "train" / "cats"] if quantize == "int8" else []
    result = user.run(
        "export",
        "--weights",
        digits_run / "model.keras",
        "--format",
        "tflite",
        "--quantize",
        quantize,
        *calibration,
        "-o",
        output,
    )
    assert output.stat().st_size > 0
    assert "top-1 agreement" in result.stdout


def test_export_serving_then_serve_request(user, digits_run):
    user.run(
        "export",
        "--weights",
        digits_run / "model.keras",
        "--format",
        "serving",
        "--name",
        "digits",
        "--version",
        "1",
        "-o",
        "exported/serving",
    )
    version_dir = user.work / "exported" / "serving" / "digits" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "assets.extra" / "tf_serving_warmup_requests").is_file()
    image = _write_image(user.work / "request.png", seed=3, size=48)
    service = helpers.SavedModelPredictionService(version_dir)
    with helpers.grpc_stand_in(service, "digits") as port:
        result = user.run(
            "serve-request", "--model-name", "digits", "--host", "127.0.0.1", "--port", port, image
        )
    class_names = json.loads((digits_run / "class_names.json").read_text())
    assert str(image) in result.stdout
    assert any(name in result.stdout for name in class_names), result.stdout
