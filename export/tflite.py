"""TFLite (LiteRT) conversion: float32, float16, dynamic-range and full-integer int8.

The model goes through a SavedModel (Keras ExportArchive) and `TFLiteConverter.from_saved_model`,
the route Keras's own LiteRT exporter takes; `from_concrete_functions` with Keras 3 variables
silently produces NaNs (deploy-facts 3.2). Only builtin ops are allowed: LiteRT from pip has no
Flex delegate, so a model needing TF ops must fail at conversion, not on the phone.

The `.tflite` file has one signature, `serving_default`: input `image` `[1, H, W, 3]` (RGB
0..255, official eval transform already applied; float32, or int8/uint8 for full-integer
models) and outputs `logits` and `probabilities` `[1, classes]`.

Example:
    >>> import keras_resnest
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3))
    >>> flatbuffer = convert_to_tflite(model, quantize="fp16")
    >>> "CONV_2D" in builtin_op_names(flatbuffer)
    True
"""
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_resnest import classifier, quantization
from keras_resnest.export import calibration

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
INT8_IO_TYPES = {"uint8": tf.uint8, "int8": tf.int8}
INPUT_NAME = "image"
DEFAULT_CALIBRATION_SAMPLES = 100


def check_quantize_mode(quantize):
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"unknown quantize mode {quantize!r}; expected one of {', '.join(QUANTIZE_MODES)}"
        )
    return quantize


def write_conversion_saved_model(model, directory, image_size):
    """SavedModel with a batch-1 `serving_default` returning logits and probabilities.

    A fixed batch of 1 keeps SHAPE/STRIDED_SLICE ops for a dynamic batch out of the flatbuffer.
    """
    head = classifier.classifier_head(model)

    def serve(image):
        logits, probabilities = head(image, training=False)
        return {"logits": logits, "probabilities": probabilities}

    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[
            tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name=INPUT_NAME)
        ],
    )
    archive.write_out(str(directory), verbose=False)


def configure_converter(
    converter, quantize, calibration_images=None, int8_io="uint8", quantize_aware=False
):
    """Set the optimisation options of a TFLiteConverter for `quantize`.

    `quantize_aware`: the graph carries FakeQuant ranges (QAT, `quantization`): int8 takes them
    instead of calibrating. Such graphs keep `TFLITE_BUILTINS`: with `TFLITE_BUILTINS_INT8` and
    no representative dataset, TF 2.21's `from_saved_model` path refuses before it looks at the
    graph; the result is full-integer either way (tests/test_qat.py checks every tensor).
    """
    check_quantize_mode(quantize)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "none":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if int8_io not in INT8_IO_TYPES:
            raise ValueError(f"int8_io must be 'uint8' or 'int8', got {int8_io!r}")
        converter.inference_input_type = INT8_IO_TYPES[int8_io]
        converter.inference_output_type = INT8_IO_TYPES[int8_io]
        if quantize_aware:  # the ranges are in the graph; TFLITE_BUILTINS (see above)
            return converter
        if calibration_images is None or len(calibration_images) == 0:
            raise ValueError("int8 quantization needs calibration images (--calibration DIR)")

        def representative_dataset():
            for image in calibration_images:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def convert_to_tflite(
    model,
    quantize="none",
    *,
    image_size=None,
    calibration_data=None,
    num_calibration=DEFAULT_CALIBRATION_SAMPLES,
    int8_io="uint8",
):
    """Convert a Keras classifier to a TFLite flatbuffer (bytes) with builtin ops only.

    Args:
        model (keras.Model): Keras classifier with a Dense "fc" logits layer, taking RGB 0..255.
        quantize (str): "none" (float32), "fp16" (float16 weights), "dynamic" (int8 weights, float
            activations) or "int8" (full integer, calibrated; a quantization-aware model from
            `keras_resnest.quantization` / `train --qat-epochs` uses its learned ranges and
            needs no calibration).
        image_size (int or None): square input size (default: the size the model was built for).
        calibration_data (str, np.ndarray, tf.data.Dataset or None): for int8: an image
            folder, a float32 array `[N, H, W, 3]` or a `tf.data.Dataset` of images (RGB
            0..255, eval-transformed).
        num_calibration (int): at most this many calibration images are used.
        int8_io (str): "uint8" or "int8" input/output type for full-integer models.

    Raises:
        ValueError: bad arguments or calibration data.
        RuntimeError: the converted model needs non-builtin (Flex/custom) ops.
    """
    check_quantize_mode(quantize)
    image_size = classifier.resolve_image_size(model, image_size)
    images = None
    quantize_aware = quantization.is_quantize_aware(model)
    if quantize_aware:
        if quantize != "int8":  # its fake-quantized tensors are meant for int8 kernels
            raise ValueError(
                f"model {model.name!r} is quantization-aware: it converts with "
                f"quantize='int8' only, not {quantize!r}"
            )
        quantization.check_ranges_observed(model)
    if quantize == "int8" and not quantize_aware:
        if calibration_data is None:
            raise ValueError("int8 quantization needs calibration images (--calibration DIR)")
        images = calibration.as_image_array(
            calibration_data, image_size, limit=num_calibration, progress=True
        )
    with tempfile.TemporaryDirectory() as scratch:
        saved_model_dir = Path(scratch) / "saved_model"
        write_conversion_saved_model(model, saved_model_dir, image_size)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        configure_converter(converter, quantize, images, int8_io, quantize_aware)
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter raises ConverterError and friends
            raise RuntimeError(
                f"TFLite conversion ({quantize}) failed; the model must convert to builtin ops "
                f"only: {error}"
            ) from error
    check_builtin_ops(flatbuffer)
    return flatbuffer


def builtin_op_names(flatbuffer):
    """Names of the ops in the flatbuffer (before any delegate rewrites the graph)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return {op["op_name"] for op in interpreter._get_ops_details()}


def check_builtin_ops(flatbuffer):
    """Raise RuntimeError if the model has Flex (Select TF) or custom ops."""
    try:
        names = builtin_op_names(flatbuffer)
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(f"the converted model does not load in LiteRT: {error}") from error
    foreign = sorted(
        n for n in names if n.startswith("Flex") or n.upper() in ("CUSTOM", "DELEGATE")
    )
    if foreign:
        raise RuntimeError(f"the converted model uses non-builtin ops: {', '.join(foreign)}")
    return names
