"""One full-size architecture through the SavedModel export: ResNeSt-50 at 64 px.

Weights come from the official PyTorch model (random init, random BN state), so the served
signatures are compared both with the Keras model and with the official model itself.
"""
import numpy as np
import pytest
import tensorflow as tf

import keras_resnest
from keras_resnest.export import image_transform
from keras_resnest.export.saved_model import export_saved_model

from tests.helpers import export_helpers as helpers
from tests.helpers import scratch
from tests.helpers import torch_reference as ref

pytestmark = pytest.mark.slow  # the whole file: see `make test-fast`

SIZE = 64


@pytest.fixture(scope="module")
def resnest50(tmp_path_factory):
    reference = ref.build_randomized("resnest50", seed=5)
    model = keras_resnest.create_model("resnest50", weights=None, input_shape=(SIZE, SIZE, 3))
    keras_resnest.load_torch_state_dict(model, ref.state_dict_numpy(reference))
    with scratch.module_folder(tmp_path_factory, "resnest50") as folder:
        path = export_saved_model(model, folder / "saved_model")
        yield reference, model, tf.saved_model.load(str(path))


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_resnest50_float_signature_matches_keras_and_official(resnest50):
    reference, model, loaded = resnest50
    images = np.stack([helpers.natural_image(SIZE, SIZE, seed) for seed in range(3)]).astype(
        np.float32)
    served = loaded.signatures["serving_default"](image=tf.constant(images))
    probabilities = served["probabilities"].numpy()
    assert ref.relative_error(probabilities, model.predict(images, verbose=0)) <= 1e-5
    assert ref.relative_error(probabilities, softmax(ref.logits(reference, images))) <= 1e-4
    np.testing.assert_array_equal(served["classes"].numpy()[:, 0], probabilities.argmax(1))


def test_resnest50_bytes_signature_matches_keras(resnest50):
    _, model, loaded = resnest50
    files = helpers.sample_encoded_images()
    served = loaded.signatures["serving_bytes"](image_bytes=tf.constant(files))
    images = np.stack([image_transform.decode_and_transform(tf.constant(f), SIZE).numpy()
                       for f in files])
    expected = model.predict(images, verbose=0)
    assert ref.relative_error(served["probabilities"].numpy(), expected) <= 1e-5
