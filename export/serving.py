"""TensorFlow Serving package: a versioned SavedModel with warm-up records and server configs.

Layout written under `output_dir` (mount it at `/models` in the server container):

    output_dir/
        models.config                 ModelServerConfig text proto listing every model here
        batching.config               server-side batching parameters (--enable_batching)
        <name>/<version>/             SavedModel (see keras_resnest.export.saved_model)
            assets.extra/tf_serving_warmup_requests
                                      TFRecord of PredictionLog records, one per signature,
                                      replayed by the server before it takes traffic

Example:
    >>> import keras_resnest, tempfile
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3))
    >>> models = tempfile.mkdtemp()
    >>> path = export_serving_package(model, models, "resnest14d", version=1)
    >>> path.relative_to(models).as_posix(), sorted(p.name for p in path.parent.parent.iterdir())
    ('resnest14d/1', ['batching.config', 'models.config', 'resnest14d'])
"""
import re
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from keras_resnest.export import saved_model
from keras_resnest.export.output_paths import replace_directory, write_file_atomically
from keras_resnest.images import DEFAULT_MAX_PIXELS

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MODELS_CONFIG = "models.config"
BATCHING_CONFIG = "batching.config"
# Where the docker command of the README mounts `output_dir`.
CONTAINER_MODELS_DIR = "/models"
# Server-side batching (tensorflow_serving/batching/README.md): small batches, short wait, for
# a CPU server; tune max_batch_size/num_batch_threads to the hardware.
BATCHING_PARAMETERS = {
    "max_batch_size": 32,
    "batch_timeout_micros": 2000,
    "max_enqueued_batches": 100,
    "num_batch_threads": 4,
}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_model_name(name):
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise ValueError(
            f"serving model name must be letters, digits, '_', '.' or '-' (it becomes a URL "
            f"path), got {name!r}"
        )
    return name


def check_version(version):
    try:
        number = int(str(version))
    except ValueError:
        number = 0
    if number < 1 or str(number) != str(version).strip():
        raise ValueError(f"version must be a positive integer (TF-Serving's rule), got {version!r}")
    return number


def version_directory(output_dir, model_name, version):
    """`output_dir/<model_name>/<version>`, the directory a package is written to.

    Checks the name, the version and that `output_dir` is not a file; no model is needed, so
    the command line checks its output with this before building one.
    """
    check_model_name(model_name)
    version = check_version(version)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output {output_dir} is a file; TF-Serving needs a directory")
    return output_dir / model_name / str(version)


def warmup_image(image_size):
    """A deterministic, natural-looking (smooth) RGB uint8 image for warm-up requests."""
    rows, cols = np.mgrid[0:image_size, 0:image_size] / max(image_size - 1, 1)
    image = np.stack([rows, cols, 1.0 - (rows + cols) / 2.0], axis=-1) * 255.0
    return image.round().astype(np.uint8)


def warmup_requests(model_name, image_size):
    """One PredictionLog per signature, exactly as a client would send it."""
    image = warmup_image(image_size)
    inputs_per_signature = {
        saved_model.FLOAT_SIGNATURE: (
            saved_model.FLOAT_INPUT,
            tf.make_tensor_proto(image[None].astype(np.float32)),
        ),
        saved_model.BYTES_SIGNATURE: (
            saved_model.BYTES_INPUT,
            tf.make_tensor_proto([tf.io.encode_jpeg(image, quality=95).numpy()], dtype=tf.string),
        ),
    }
    logs = []
    for signature, (input_name, tensor) in inputs_per_signature.items():
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        request.inputs[input_name].CopyFrom(tensor)
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    return logs


def write_warmup_file(version_dir, model_name, image_size):
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in warmup_requests(model_name, image_size):
            writer.write(log.SerializeToString())
    return path


def served_models(output_dir):
    """Names of the model directories under `output_dir` that hold a numeric version."""
    names = []
    for child in sorted(Path(output_dir).iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            if any(v.is_dir() and v.name.isdigit() for v in child.iterdir()):
                names.append(child.name)
    return names


def models_config_text(model_names):
    """ModelServerConfig text proto serving each model from `/models/<name>`."""
    config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        config.model_config_list.config.add(
            name=name, base_path=f"{CONTAINER_MODELS_DIR}/{name}", model_platform="tensorflow"
        )
    return text_format.MessageToString(config)


def batching_config_text(parameters=None):
    """BatchingParameters text proto (the file the server's --batching_parameters_file reads)."""
    parameters = {**BATCHING_PARAMETERS, **(parameters or {})}
    return "".join(f"{key} {{ value: {int(value)} }}\n" for key, value in parameters.items())


def export_serving_package(
    model, output_dir, model_name, version=1, *, image_size=None, labels=None, overwrite=False,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """Export `model` for TF-Serving as `output_dir/<model_name>/<version>/`.

    The version directory is written to a temporary sibling and renamed into place; an existing
    non-empty version directory is refused unless `overwrite`. `models.config` (listing every
    model under `output_dir`) and `batching.config` are (re)written beside the model directory.
    `max_pixels` is the `serving_bytes` pixel limit (see `saved_model`).

    Returns:
        Path: the version directory.
    """
    saved_model.check_max_pixels(max_pixels)
    output_dir = Path(output_dir)
    version_dir = version_directory(output_dir, model_name, version)
    with replace_directory(version_dir, overwrite=overwrite) as staging:
        size = saved_model.write_saved_model(model, staging, image_size=image_size, labels=labels,
                                             max_pixels=max_pixels)
        write_warmup_file(staging, model_name, size)
    write_file_atomically(output_dir / MODELS_CONFIG, models_config_text(served_models(output_dir)))
    write_file_atomically(output_dir / BATCHING_CONFIG, batching_config_text())
    return version_dir
