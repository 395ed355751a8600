"""Shared, cached artifacts of the export tests (built once per test session, on demand).

Module-level caches rather than fixtures, so that all the export test modules share them.
"""
import atexit
import contextlib
import fcntl
import functools
import io
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
from PIL import Image

import keras_resnest

from tests.helpers import torch_reference as ref

SMALL_SIZE = 64
DIGIT_SIZE = 32


@functools.lru_cache(maxsize=None)
def workdir():
    path = Path(tempfile.mkdtemp(prefix="keras_resnest_export_tests_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def small_model():
    """ResNeSt-14d at 64 px with the official random init and random BN state (1000 classes)."""
    model = keras_resnest.create_model(
        "resnest14d", weights=None, input_shape=(SMALL_SIZE, SMALL_SIZE, 3)
    )
    keras_resnest.load_torch_state_dict(
        model, ref.state_dict_numpy(ref.build_randomized("resnest14d", seed=3))
    )
    return model


@functools.lru_cache(maxsize=None)
def serving_package():
    """`export_serving_package(small_model())` under workdir()/models, version 1."""
    from keras_resnest.export.serving import export_serving_package

    return export_serving_package(small_model(), workdir() / "models", "resnest14d", version=1)


def natural_image(height, width, seed):
    """A smooth RGB uint8 image with some texture (not white noise)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 6.3, 3)
    period = rng.uniform(5, 20, 3)
    channels = [
        128 + 90 * np.sin(cols / period[0] + phase[0]),
        128 + 90 * np.cos(rows / period[1] + phase[1]),
        128 + 90 * np.sin((rows + cols) / period[2] + phase[2]),
    ]
    image = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image, image_format, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, image_format, **options)
    return buffer.getvalue()


def sample_encoded_images():
    """JPEG and PNG files of different sizes and aspect ratios."""
    shapes = [(97, 131), (150, 90), (64, 64), (240, 320)]
    files = []
    for index, (height, width) in enumerate(shapes):
        image = natural_image(height, width, seed=index)
        files.append(encode(image, "JPEG", quality=90) if index % 2 == 0 else encode(image, "PNG"))
    return files


# --- a model trained on real images: scikit-learn's bundled 8x8 digits, upsampled ---


@functools.lru_cache(maxsize=None)
def digits_split():
    """(train_images, train_labels, test_images, test_labels); images RGB 0..255, 32x32."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scale = DIGIT_SIZE // digits.images.shape[1]
    images = digits.images.astype(np.float32) * (255.0 / 16.0)
    images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
    images = np.repeat(images[..., None], 3, axis=-1).round()
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], digits.target[order]
    split = int(0.8 * len(images))
    return images[:split], labels[:split], images[split:], labels[split:]


@functools.lru_cache(maxsize=None)
def digits_model():
    """ResNeSt-14d (32 px, 10 classes) trained 4 epochs on the digits: ~97% held-out accuracy.

    Trained once per test run (about 3 minutes on two cores): the xdist workers of one run share
    it through a file under the system temp folder, the first to arrive training it under a lock.
    """
    run_id = os.environ["PYTEST_XDIST_TESTRUNUID"]  # tests/conftest.py
    shared = Path(tempfile.gettempdir()) / f"keras_resnest_tests_digits_{run_id}.keras"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shared.exists():
            return keras_resnest.load_model(shared)  # registers the layers in a fresh process
        model = _train_digits_model()
        model.save(f"{shared}.partial.keras")
        os.replace(f"{shared}.partial.keras", shared)
    return model


def _train_digits_model():
    train_images, train_labels, _, _ = digits_split()
    keras.utils.set_random_seed(0)
    model = keras_resnest.create_model(
        "resnest14d", weights=None, input_shape=(DIGIT_SIZE, DIGIT_SIZE, 3), classes=10,
        name="digits",
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, batch_size=64, epochs=4, verbose=0)
    return model


def write_digit_folder(folder, images):
    """Save digits as 64x64 PNGs, the digit centred on a black border: the official eval
    transform at 32 px (crop 32/64 of the side, then resize 32 -> 32) gives the digit back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pad = DIGIT_SIZE // 2
    for index, image in enumerate(images):
        canvas = np.pad(image.astype(np.uint8), ((pad, pad), (pad, pad), (0, 0)))
        Image.fromarray(canvas).save(folder / f"digit_{index:04d}.png")
    return folder


# --- TF-Serving's Predict API in-process (no TF-Serving binary exists here) ---


class SavedModelPredictionService:
    """What TF-Serving does with a Predict call: run the named signature of the SavedModel."""

    def __init__(self, version_dir):
        import tensorflow as tf

        self.model = tf.saved_model.load(str(version_dir))

    def predict(self, signature_name, inputs):
        outputs = self.model.signatures[signature_name or "serving_default"](**inputs)
        return {name: value.numpy() for name, value in outputs.items()}


@contextlib.contextmanager
def grpc_stand_in(service, model_name):
    """A gRPC PredictionService on 127.0.0.1 answering for `model_name`; yields its port."""
    from concurrent import futures

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if request.model_spec.name != model_name:
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found: {request.model_spec.name}"
                )
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for name, value in service.predict(request.model_spec.signature_name, inputs).items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)
