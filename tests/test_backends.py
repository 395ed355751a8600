"""Every Keras 3 backend (TensorFlow, JAX, PyTorch): build, parity with the official model,
`model.fit`, `.keras` save/load, and `.keras` files moving between backends.

Each backend runs in its own subprocess (`KERAS_BACKEND` is read once, at `import keras`) on a
representative subset at 64 px: resnest14d (radix 2, cardinality 1, the small deep-stem model)
and resnest50_fast_1s4x24d (radix 1: the sigmoid gate; cardinality 4: grouped convolutions
and the cardinal/radix channel order; avd before the split-attention conv).

The TensorFlow worker runs first and saves, per model, a `.keras` file, a copy of it with the
layer names of keras-resnest 0.1.0 ("layer3.5", "conv1.0": the config JSON renamed, as the old
release wrote it), a `.weights.h5` saved by that old-named model, the input images and the
logits. The JAX and PyTorch workers load all three and must give the same logits.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import scratch

pytestmark = pytest.mark.slow  # the whole file: see `make test-fast`

MODELS = ("resnest14d", "resnest50_fast_1s4x24d")
BACKENDS = ("tensorflow", "jax", "torch")
SIZE = 64
BATCH = 2
# Same weights and inputs on two backends: only float32 summation order differs.
CROSS_BACKEND_TOLERANCE = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rel(actual, expected):
    import keras

    actual = np.asarray(keras.ops.convert_to_numpy(actual), "float64")
    expected = np.asarray(expected, "float64")
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _legacy_copy(path, output):
    """`path` with its layers named as keras-resnest 0.1.0 named them ("layer3_5" -> "layer3.5")."""
    import zipfile

    from keras_resnest.porting import torch_module_name

    with zipfile.ZipFile(path) as source, zipfile.ZipFile(output, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                names = {layer["name"] for layer in config["config"]["layers"]}
                mapping = {n: torch_module_name(n) for n in names if torch_module_name(n) != n}
                text = json.dumps(config)
                for new, old in mapping.items():
                    text = text.replace(json.dumps(new), json.dumps(old))
                data = text.encode()
            target.writestr(info, data)


def worker(backend, directory):
    """Runs in a subprocess with KERAS_BACKEND=backend; writes `<backend>.json` results."""
    import warnings

    import keras

    import keras_resnest
    from keras_resnest.weights import apply_weights

    from tests.helpers.torch_reference import (
        build_randomized,
        logits,
        random_images,
        relative_error,
        state_dict_numpy,
    )

    assert keras.backend.backend() == backend, keras.backend.backend()
    results = {}
    for name in MODELS:
        row = results[name] = {}
        clock = [time.perf_counter()]

        def lap(row, key):
            now = time.perf_counter()
            row[key] = round(now - clock[0], 1)
            clock[0] = now
        reference = build_randomized(name)
        images = random_images(BATCH, SIZE, SIZE, seed=1)
        model = keras_resnest.create_model(name, weights=None, input_shape=(SIZE, SIZE, 3),
                                           classifier_activation=None)
        assert not any("." in layer.name for layer in model.layers)
        keras_resnest.load_torch_state_dict(model, state_dict_numpy(reference))
        ours = keras.ops.convert_to_numpy(model(images, training=False))
        row["parity"] = relative_error(ours, logits(reference, images))
        lap(row, "t_build_parity")

        # Saved and reloaded on this backend: the same outputs.
        saved = os.path.join(directory, f"{name}.{backend}.keras")
        model.save(saved)
        reloaded = keras.saving.load_model(saved)
        row["reload"] = _rel(keras.ops.convert_to_numpy(reloaded(images, training=False)), ours)
        lap(row, "t_save_reload")

        if backend == "tensorflow":
            np.save(os.path.join(directory, f"{name}.images.npy"), images)
            np.save(os.path.join(directory, f"{name}.logits.npy"), ours)
            legacy = os.path.join(directory, f"{name}.legacy.keras")
            _legacy_copy(saved, legacy)
            # TensorFlow accepts dotted names: this is the model the old release built.
            old_model = keras.saving.load_model(legacy)
            assert old_model.get_layer("layer3.0") is not None
            old_model.save_weights(os.path.join(directory, f"{name}.legacy.weights.h5"))
        else:
            # Files written under TensorFlow: a new .keras, an old .keras, an old .weights.h5.
            expected = np.load(os.path.join(directory, f"{name}.logits.npy"))
            images = np.load(os.path.join(directory, f"{name}.images.npy"))
            from_tf = keras.saving.load_model(os.path.join(directory,
                                                           f"{name}.tensorflow.keras"))
            row["tf_keras"] = _rel(from_tf(images, training=False), expected)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                old = keras_resnest.load_model(os.path.join(directory, f"{name}.legacy.keras"))
            assert any("keras-resnest 0.1.0" in str(w.message) for w in caught)
            assert old.get_layer("layer3_0") is not None
            row["tf_legacy_keras"] = _rel(old(images, training=False), expected)
            # weights= of create_model, into a model already built here (saves a build).
            apply_weights(reloaded, os.path.join(directory, f"{name}.legacy.weights.h5"),
                          model_name=name)
            row["tf_legacy_weights_h5"] = _rel(reloaded(images, training=False), expected)

        lap(row, "t_cross_backend_files")
        # A few training steps: finite loss, weights move.
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        kernel = model.get_layer("layer2_0").conv2.conv.group_kernels[0]
        before = keras.ops.convert_to_numpy(kernel).copy()
        labels = np.arange(BATCH * 2) % 1000
        train_images = random_images(BATCH * 2, SIZE, SIZE, seed=2)
        history = model.fit(train_images, labels, batch_size=BATCH, epochs=1, verbose=0)
        row["fit_loss"] = [float(v) for v in history.history["loss"]]
        row["fit_moved"] = bool(np.abs(keras.ops.convert_to_numpy(kernel) - before).max() > 0)
        lap(row, "t_fit")
    with open(os.path.join(directory, f"{backend}.json"), "w") as file:
        json.dump(results, file)


def _start_worker(backend, directory):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys; from tests.test_backends import worker; "
            "worker(sys.argv[1], sys.argv[2])")
    return subprocess.Popen([sys.executable, "-c", code, backend, str(directory)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_worker(backend, process, directory):
    try:
        _, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    if process.returncode:
        return {"error": f"KERAS_BACKEND={backend} worker failed:\n{stderr[-6000:]}"}
    with open(os.path.join(directory, f"{backend}.json")) as file:
        return json.load(file)


@pytest.fixture(scope="module")
def backend_results(tmp_path_factory):
    import resnest  # noqa: F401  (the official reference: the test extra installs it)
    import torch  # noqa: F401

    with scratch.module_folder(tmp_path_factory, "backends") as directory:
        # TensorFlow first: the others load its files. JAX and PyTorch then run side by side
        # (mostly single-threaded op dispatch at 64 px).
        results = {"tensorflow": _finish_worker(
            "tensorflow", _start_worker("tensorflow", directory), directory)}
        if "error" in results["tensorflow"]:
            return results
        processes = {backend: _start_worker(backend, directory) for backend in BACKENDS[1:]}
        for backend, process in processes.items():
            results[backend] = _finish_worker(backend, process, directory)
        return results


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend(backend, backend_results):
    from keras_resnest.weights.reference import PARITY_TOLERANCE

    # The test extra installs every backend: a missing one fails here rather than skipping.
    assert backend in backend_results, f"no {backend} result: TensorFlow's worker failed first"
    if "error" in backend_results[backend]:
        pytest.fail(backend_results[backend]["error"])
    print(backend, json.dumps(backend_results[backend]))
    for name, row in backend_results[backend].items():
        assert row["parity"] <= PARITY_TOLERANCE, (backend, name, row)
        assert row["reload"] <= 1e-6, (backend, name, row)
        assert all(np.isfinite(row["fit_loss"])) and row["fit_moved"], (backend, name, row)
        if backend != "tensorflow":
            for key in ("tf_keras", "tf_legacy_keras", "tf_legacy_weights_h5"):
                assert row[key] <= CROSS_BACKEND_TOLERANCE, (backend, name, key, row)
