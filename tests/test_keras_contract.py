"""`import keras_resnest` is all a program needs to load the `.keras` files the package writes,
and the `keras-resnest` command still answers `--help` without Keras.

Each file is loaded in a fresh process that imports nothing but `keras_resnest` and Keras, as a
user's program would, and must predict what the model that wrote it predicts.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import keras_resnest

SIZE = 32
CLASSES = 10
HELP_SECONDS = 2.0
LOAD_AND_PREDICT = """
import sys
import numpy as np
import keras_resnest, keras
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


def _created_model():
    return keras_resnest.create_model("resnest14d", weights=None, input_shape=(SIZE, SIZE, 3),
                                      classes=CLASSES)


def _quantize_aware_model():
    from keras_resnest.quantization import quantize_aware

    model = quantize_aware(_created_model())
    # One training-mode call sets the activation ranges, as a QAT phase would.
    model(np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32"),
          training=True)
    return model


def _trained_model():
    # What `keras-resnest train` saves as model.keras: the classifier of finetune (the loop's
    # optimizer is not part of the file).
    from keras_resnest.training.finetune import build_classifier

    return build_classifier("resnest14d", num_classes=CLASSES, image_size=SIZE, weights=None)


@pytest.mark.slow
@pytest.mark.parametrize("build", [_created_model, _quantize_aware_model, _trained_model],
                         ids=["create_model", "quantize_aware", "train"])
def test_a_fresh_process_loads_the_file_after_import_keras_resnest(build, tmp_path):
    model = build()
    path = tmp_path / "model.keras"
    model.save(path)
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(path), str(tmp_path / "images.npy"),
         str(tmp_path / "predicted.npy")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "predicted.npy"),
                               model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def test_import_registers_the_layers_and_the_public_names():
    code = ("import keras, keras_resnest; "
            "print(keras.saving.get_registered_object('keras_resnest>BatchNorm') is not None, "
            "keras.saving.get_registered_object('keras_resnest>QatConv') is not None, "
            "callable(keras_resnest.create_model))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.split() == ["True", "True", "True"], result.stderr[-3000:]


def test_command_help_does_not_import_keras():
    command = os.path.join(os.path.dirname(sys.executable), "keras-resnest")
    seconds = []
    for _ in range(3):  # the fastest of three: robust to a loaded machine
        start = time.perf_counter()
        result = subprocess.run([command, "--help"], capture_output=True, text=True,
                                timeout=60)
        seconds.append(time.perf_counter() - start)
        assert result.returncode == 0 and "predict" in result.stdout, result.stderr
    assert min(seconds) < HELP_SECONDS, seconds
    code = ("import sys, keras_resnest_cli; from keras_resnest.commands.main import build_parser; "
            "build_parser(); print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.split() == ["False", "False"]
