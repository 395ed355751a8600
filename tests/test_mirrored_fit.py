"""A user's own `model.fit` under MirroredStrategy (two logical CPUs): every replica ends with
the same BatchNorm moving statistics, and the saved model predicts what `evaluate` measured.

Each case runs in a fresh interpreter: the logical devices must be set before TensorFlow starts.
"""
import json
import subprocess
import sys

import pytest

from tests.helpers.training_runs import train_env

_FIT_SCRIPT = """
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import keras_resnest
from keras_resnest.training.digits import load_digits_dataset

synchronized = json.loads(sys.argv[1])
keras.utils.set_random_seed(0)
digits = load_digits_dataset(image_size=32)
train_x, train_y = digits.train_images[:384].astype("float32"), digits.train_labels[:384]
test_x, test_y = digits.val_images[:128].astype("float32"), digits.val_labels[:128]

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(32, 32, 3),
                                       classes=10, synchronized_batch_norm=synchronized)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train_x, train_y, batch_size=64, epochs=1, shuffle=False, verbose=0)

norms = [layer for layer in model._flatten_layers()
         if isinstance(layer, keras.layers.BatchNormalization)]
spread = {"moving_mean": 0.0, "moving_variance": 0.0}
for norm in norms:
    for name in spread:
        # Keras' variable wraps the MirroredVariable; its local results are the replicas' copies.
        replicas = [np.asarray(v)
                    for v in strategy.experimental_local_results(getattr(norm, name).value)]
        assert len(replicas) == 2, getattr(norm, name).path
        spread[name] = max(spread[name], float(np.max(np.abs(replicas[0] - replicas[1]))))
_, accuracy = model.evaluate(test_x, test_y, batch_size=64, verbose=0)
probabilities = model.predict(test_x, batch_size=64, verbose=0)

path = os.path.join(sys.argv[2], "model.keras")
model.save(path)
loaded = keras.models.load_model(path)  # outside the strategy: one device, no replicas
loaded_probabilities = loaded.predict(test_x, batch_size=64, verbose=0)
print("RESULT", json.dumps({
    "synchronized": [norm.synchronized for norm in norms],
    "config_has_synchronized": "synchronized" in json.dumps(model.get_config()),
    "loaded_synchronized": [layer.synchronized for layer in loaded._flatten_layers()
                            if isinstance(layer, keras.layers.BatchNormalization)],
    "replica_spread": spread,
    "evaluate_accuracy": float(accuracy),
    "loaded_accuracy": float(np.mean(np.argmax(loaded_probabilities, -1) == test_y)),
    "loaded_vs_strategy": float(np.max(np.abs(loaded_probabilities - probabilities))),
}))
"""


def _fit(synchronized, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _FIT_SCRIPT, json.dumps(synchronized),
                           str(tmp_path)], env=train_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_fit_under_mirrored_strategy_keeps_the_replicas_batchnorm_identical(tmp_path):
    # The default: synchronized under a multi-replica strategy. With synchronized_batch_norm=False
    # this run measured replicas whose moving_variance differed by up to 0.20 (moving_mean 0.041)
    # and saved-model probabilities 0.014 away from the strategy's predict.
    result = _fit(None, tmp_path)
    assert len(result["synchronized"]) > 10 and all(result["synchronized"])
    # Not saved (JAX and PyTorch refuse synchronized=True); loaded on one device, it is off.
    assert not result["config_has_synchronized"] and not any(result["loaded_synchronized"])
    assert result["replica_spread"] == {"moving_mean": 0.0, "moving_variance": 0.0}
    assert result["loaded_accuracy"] == result["evaluate_accuracy"]
    assert result["loaded_vs_strategy"] < 1e-5
