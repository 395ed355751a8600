"""ONNX export for onnxruntime, OpenVINO and TensorRT users: float32, and int8 (static QDQ).

The file has the input contract of the SavedModel's `serving_default`: input `image`, float32
`[batch, H, W, 3]` RGB 0..255 (already cropped and resized; the ImageNet normalisation runs
inside), a dynamic batch, and outputs `logits` and `probabilities` `[batch, classes]`.

How the graph is built, chosen by measurement (resnest50, 224 px, onnxruntime 1.32 CPU provider,
2 threads, against the official model exported by `torch.onnx.export`, in one run):

* Keras' own `model.export(format="onnx")` (tf2onnx on the served TF graph) ran well below the
  official file's speed: the TensorFlow fast paths (`layers/backend_paths.py`) split each grouped
  convolution into one convolution per group (103 Conv nodes for the official 87, 97 Transposes),
  and the in-graph normalisation constants became extra graph inputs.
* Here the classifier is traced under `backend_paths.portable_paths()` (one grouped Conv per
  convolution, as in the official graph), its variables are frozen into constants (the
  normalisation becomes two constant nodes, not inputs), the XLA wrapper Keras puts around a
  grouped convolution on TensorFlow is inlined (it only marks the call for XLA), and tf2onnx
  converts the frozen GraphDef at opset 17. The result has the official graph's 87 Conv nodes;
  onnxruntime folds BatchNorm into them and its transpose optimizer removes the NHWC <-> NCHW
  transposes except those around the split-attention reshapes, which the official graph has too.
  Three patterns tf2onnx leaves and onnxruntime does not fuse are then rewritten exactly
  (`onnx_rewrites.py`: the input scale, the stem's pad before max pooling, the attention's
  BatchNorm behind a reshape).
  The measured speed is in docs/benchmarks.md and `benchmarks/inference.py` prints it.

int8 uses onnxruntime's own static quantizer (QDQ format, per-channel int8 weights, int8
activations calibrated with min/max on an image folder), after its `quant_pre_process` shape
inference and graph optimisation, as onnxruntime documents for CNNs. The stem's first
convolution stays float32 (see `_first_convolution` for the measurement).

onnx, onnxruntime and tf2onnx are the optional extra `keras-resnest[onnx]`; `check_onnx_installed`
names what is missing in one line, before any work.

Example:
    >>> import keras_resnest, onnxruntime, numpy as np
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3))
    >>> session = onnxruntime.InferenceSession(convert_to_onnx(model))
    >>> [output.name for output in session.get_outputs()]
    ['logits', 'probabilities']
    >>> session.run(["probabilities"], {"image": np.zeros((2, 64, 64, 3), "float32")})[0].shape
    (2, 1000)
"""
import contextlib
import importlib.util
import logging
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_resnest import classifier
from keras_resnest.export import onnx_rewrites
from keras_resnest.layers.backend_paths import portable_paths

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")
OPSET = 17
QUANTIZE_MODES = ("none", "int8")
REQUIRED_PACKAGES = ("onnx", "onnxruntime", "tf2onnx")
# onnxruntime's quantization preprocessing (symbolic shape inference) imports sympy, which
# onnxruntime itself does not install.
INT8_PACKAGES = ("sympy",)
INSTALL_HINT = 'pip install "keras-resnest[onnx]"'
# Function attributes that keep grappler from inlining Keras' XLA-compiled grouped convolution.
_NO_INLINE_ATTRIBUTES = ("_XlaMustCompile", "_noinline")


def check_onnx_installed(quantize="none"):
    """ValueError naming the missing packages of the `onnx` extra, if any."""
    needed = REQUIRED_PACKAGES + (INT8_PACKAGES if quantize == "int8" else ())
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        names = " and ".join(
            [", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing
        )
        raise ValueError(
            f"ONNX export needs {names}, which {'is' if len(missing) == 1 else 'are'}"
            f" not installed: {INSTALL_HINT}"
        )


def check_quantize_mode(quantize):
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"ONNX export supports quantize modes {', '.join(QUANTIZE_MODES)}; got {quantize!r}"
        )
    return quantize


def convert_to_onnx(model, quantize="none", calibration_data=None, image_size=None):
    """The serialized ONNX model (bytes) of a classifier; see the module docstring.

    Args:
        model (keras.Model): a ResNeSt classifier (Dense "fc" logits layer).
        quantize (str): "none" (float32) or "int8" (static QDQ; needs `calibration_data`).
        calibration_data (np.ndarray or None): float32 images `[N, H, W, 3]`, RGB 0..255 at the
            export size.
        image_size (int or None): the export size if the model accepts any size (default: its own).
    """
    check_quantize_mode(quantize)
    check_onnx_installed(quantize)
    image_size = classifier.resolve_image_size(model, image_size)
    if quantize == "int8":
        calibration_data = _check_calibration_data(calibration_data, image_size)
    float_model = _float_onnx(model, image_size)
    if quantize == "none":
        return float_model
    return quantize_int8(float_model, calibration_data)


def _check_calibration_data(images, image_size):
    if images is None:
        raise ValueError(
            "int8 quantization needs calibration images (an image folder: --calibration DIR)"
        )
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3) or not len(images):
        raise ValueError(
            f"calibration images must be a non-empty (N, {image_size}, "
            f"{image_size}, 3) array, got {images.shape}"
        )
    return images


def _frozen_classifier_graph(model, image_size):
    """GraphDef of image -> (logits, probabilities), variables as constants, XLA calls inlinable."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    head = classifier.classifier_head(model)

    @tf.function
    def serve(image):
        logits, probabilities = head(image, training=False)
        return tf.identity(logits, name=OUTPUT_NAMES[0]), tf.identity(
            probabilities, name=OUTPUT_NAMES[1]
        )

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT_NAME)
    with portable_paths():
        concrete = serve.get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    for function in graph_def.library.function:
        for key in _NO_INLINE_ATTRIBUTES:
            if key in function.attr:
                function.attr[key].b = False
    for node in graph_def.node:
        if "_XlaMustCompile" in node.attr:
            node.attr["_XlaMustCompile"].b = False
    return graph_def, frozen.inputs[0].name, [tensor.name for tensor in frozen.outputs]


def _float_onnx(model, image_size):
    import tf2onnx

    with _tensorflow_warnings_hidden():
        graph_def, input_name, output_names = _frozen_classifier_graph(model, image_size)
        model_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[input_name], output_names=output_names, opset=OPSET
        )
    _rename_graph_io(model_proto, {input_name: INPUT_NAME, **dict(zip(output_names, OUTPUT_NAMES))})
    onnx_rewrites.clean_up(model_proto)
    model_proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for output in model_proto.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "batch"
    model_proto.doc_string = (
        f"{model.name}: image [batch, {image_size}, {image_size}, 3] RGB "
        "0..255 -> logits, probabilities (keras-resnest)"
    )
    return model_proto.SerializeToString()


@contextlib.contextmanager
def _tensorflow_warnings_hidden():
    """Freezing and tf2onnx call TF1 APIs, whose deprecation notices would reach the user."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _rename_graph_io(model_proto, names):
    """TF tensor names ("image:0") -> the contract's names, wherever the graph uses them."""
    graph = model_proto.graph
    for value in list(graph.input) + list(graph.output):
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]


class _ImageReader:
    """onnxruntime's CalibrationDataReader protocol over an array of images, one per call."""

    def __init__(self, images):
        self._images = iter(images)

    def get_next(self):
        image = next(self._images, None)
        return None if image is None else {INPUT_NAME: image[None]}


def quantize_int8(float_model, calibration_images):
    """int8 QDQ model (bytes) from a float ONNX model (bytes) and calibration images."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="keras_resnest_onnx_") as work:
        work = Path(work)
        (work / "float.onnx").write_bytes(float_model)
        quant_pre_process(str(work / "float.onnx"), str(work / "prepared.onnx"))
        quantize_static(
            str(work / "prepared.onnx"),
            str(work / "int8.onnx"),
            _ImageReader(calibration_images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[_first_convolution(work / "prepared.onnx")],
        )
        return (work / "int8.onnx").read_bytes()


def _first_convolution(path):
    """The stem's first convolution, which int8 leaves in float32.

    On the digits model, quantizing every convolution made the int8 ONNX model disagree with
    Keras on part of the held-out images, whatever the calibration (MinMax, percentile,
    entropy) or activation type (int8, uint8); keeping this one convolution (3 input channels,
    a small share of the arithmetic) in float32 brings the int8 accuracy back to float's. (The
    TFLite int8 export keeps its accuracy with it quantized; why onnxruntime's QDQ form of this
    one layer loses so much was not established.)
    """
    import onnx

    graph = onnx.load(str(path)).graph
    return next(node.name for node in graph.node if node.op_type == "Conv")


def export_onnx(
    model, path, quantize="none", calibration_data=None, image_size=None, overwrite=False
):
    """Write `convert_to_onnx(...)` to `path` atomically; returns the path."""
    from keras_resnest.export import output_paths

    output_paths.refuse_existing(Path(path), overwrite)
    onnx_bytes = convert_to_onnx(model, quantize, calibration_data, image_size)
    output_paths.write_file_atomically(Path(path), onnx_bytes, overwrite=overwrite)
    return Path(path)
