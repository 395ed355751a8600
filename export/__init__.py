"""Deployment: SavedModel / TF-Serving packages, (quantized) TFLite and ONNX files, with reports.

    >>> import keras_resnest
    >>> from keras_resnest.export import export_saved_model, export_serving_package
    >>> from keras_resnest.export import convert_to_tflite, tflite_report
    >>> from keras_resnest.export import export_onnx, convert_to_onnx, onnx_report

Modules: `image_transform` (decode + official eval transform as graph ops), `saved_model`
(signatures), `serving` (TF-Serving package), `tflite` (conversion), `calibration` (image
folders), `onnx_export` (ONNX, float32 and int8 QDQ), `report` (TFLite/ONNX vs Keras),
`qat` (quantization-aware copy of a classifier), `client` (REST/gRPC clients), `cli`
(commands).
Submodules are imported on first use, so `keras-resnest --help` does not load TensorFlow.
"""
import importlib

_EXPORTS = {
    "export_saved_model": "saved_model",
    "export_serving_package": "serving",
    "convert_to_tflite": "tflite",
    "export_onnx": "onnx_export",
    "convert_to_onnx": "onnx_export",
    "onnx_report": "report",
    "tflite_report": "report",
    "format_report": "report",
    "load_model_for_export": "model_source",
    "quantize_aware": "qat",  # QAT copy of a float classifier (int8 without calibration)
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"keras_resnest.export.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_resnest.export' has no attribute {name!r}")
