"""`keras.distribution.DataParallel` on JAX trains a keras_resnest model as one device does.

A fresh JAX process with two host devices (`--xla_force_host_platform_device_count=2`, read
once when JAX starts) fits resnest14d on the same digits twice from the same initial weights
with the same global batch: on one device, then under `DataParallel` over both devices, where
Keras splits every batch in two and XLA reduces the batch statistics and gradients across the
devices. The two runs compute the same math in a different float32 summation order.

The setting is well-conditioned on purpose: the library's training recipe (zero-initialised
last BatchNorm gamma of every block, coupled-weight-decay SGD with momentum, warmup and cosine
decay) at a small peak learning rate (1e-3). With a large learning rate on random weights
(e.g. 0.05 with momentum 0.9) training from scratch amplifies any rounding difference: there,
merely reversing the images inside every batch on ONE device changes the losses after two
epochs by as much as DataParallel does, so no tolerance could tell a sharding bug from float
order. Here both stay far below the 1e-3 relative tolerance on the losses.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import scratch

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES, BATCH, EPOCHS, PEAK_LR = 128, 32, 2, 1e-3
LOSS_TOLERANCE = 1e-3  # relative, per epoch
# The weights and moving statistics are compared as one vector each (relative L2 norm): a
# per-variable maximum would divide by the near-zero gammas that the recipe starts at zero.
STATE_TOLERANCE = 1e-3
PROBABILITY_TOLERANCE = 1e-3  # absolute, on softmax outputs


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 grey levels 0..16 -> 32x32 RGB 0..255 (nearest upsampling), no shuffling.
    images = np.repeat(np.repeat(digits.images[:IMAGES], 4, 1), 4, 2)[..., None]
    return (images.repeat(3, -1) * 16).astype("float32"), digits.target[:IMAGES]


def _relative(a, b):
    a = np.concatenate([np.ravel(v) for v in a]).astype("float64")
    b = np.concatenate([np.ravel(v) for v in b]).astype("float64")
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def worker(directory):
    """Runs in a subprocess with KERAS_BACKEND=jax and two host devices; writes result.json."""
    import jax
    import keras

    from keras_resnest.training import finetune, recipe

    assert keras.backend.backend() == "jax" and len(jax.devices()) == 2, jax.devices()
    x, y = _digits()
    steps = EPOCHS * IMAGES // BATCH

    def build():
        keras.utils.set_random_seed(0)
        model = finetune.build_classifier("resnest14d", num_classes=10, image_size=32)
        model.compile(
            optimizer=recipe.build_optimizer(
                model, learning_rate=recipe.warmup_cosine_schedule(PEAK_LR, steps, steps // 5)),
            loss=keras.losses.SparseCategoricalCrossentropy())
        return model

    def train(model):
        losses = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
                           verbose=0).history["loss"]
        return model, losses

    one = build()
    initial = one.get_weights()
    one, one_losses = train(one)
    # Before the distribution is set: Keras would shard the data for the one-device model too.
    one_probabilities = one.predict(x, batch_size=BATCH, verbose=0)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    parallel = build()  # its variables are laid out by the distribution: build after setting it
    parallel.set_weights(initial)
    parallel, parallel_losses = train(parallel)
    sharded = parallel.trainable_variables[0].value.sharding
    path = os.path.join(directory, "parallel.keras")
    parallel.save(path)
    loaded = keras.saving.load_model(path)

    def moving(model):
        return [v.numpy() for v in model.non_trainable_variables if "moving" in v.path]

    result = {
        "devices": len(sharded.device_set),
        "one_losses": one_losses,
        "parallel_losses": parallel_losses,
        "weights": _relative(one.get_weights(), parallel.get_weights()),
        "moving": _relative(moving(one), moving(parallel)),
        # Under the distribution too: the reloaded DataParallel model evaluates and predicts as
        # the one-device model does (its loss from its probabilities, without another compile).
        "evaluate": [float(-np.log(one_probabilities[np.arange(IMAGES), y]).mean()),
                     loaded.evaluate(x, y, batch_size=BATCH, verbose=0)],
        "loaded": float(np.abs(
            loaded.predict(x, batch_size=BATCH, verbose=0) - one_probabilities).max()),
    }
    with open(os.path.join(directory, "result.json"), "w") as f:
        json.dump(result, f)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    with scratch.module_folder(tmp_path_factory, "jax_data_parallel") as directory:
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
                   XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        code = "import sys; from tests.test_jax_data_parallel import worker; worker(sys.argv[1])"
        process = subprocess.run([sys.executable, "-c", code, str(directory)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert process.returncode == 0, f"JAX DataParallel worker failed:\n{process.stderr[-6000:]}"
        with open(directory / "result.json") as f:
            return json.load(f)


def test_data_parallel_fit_has_the_losses_of_one_device(result):
    assert result["devices"] == 2  # the variables really live on both devices
    one, parallel = np.array(result["one_losses"]), np.array(result["parallel_losses"])
    assert one[-1] < 0.8 * one[0], f"the run did not train: losses {one}"
    np.testing.assert_allclose(parallel, one, rtol=LOSS_TOLERANCE)


def test_data_parallel_fit_has_the_weights_and_moving_statistics_of_one_device(result):
    assert result["weights"] < STATE_TOLERANCE, result["weights"]
    assert result["moving"] < STATE_TOLERANCE, result["moving"]


def test_data_parallel_model_evaluates_predicts_and_reloads_as_one_device(result):
    one, parallel = result["evaluate"]
    assert abs(parallel - one) <= LOSS_TOLERANCE * one, result["evaluate"]
    assert result["loaded"] < PROBABILITY_TOLERANCE, result["loaded"]
