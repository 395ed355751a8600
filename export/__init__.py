"""Deployment: SavedModel / TF-Serving packages and (quantized) TFLite files, with reports.

    >>> import keras_resnest
    >>> from keras_resnest.export import export_saved_model, export_serving_package
    >>> from keras_resnest.export import convert_to_tflite, tflite_report

Modules: `image_transform` (decode + official eval transform as graph ops), `saved_model`
(signatures), `serving` (TF-Serving package), `tflite` (conversion), `calibration` (image
folders), `report` (TFLite vs Keras), `client` (REST/gRPC clients), `cli` (commands).
Submodules are imported on first use, so `keras-resnest --help` does not load TensorFlow.
"""
import importlib

_EXPORTS = {
    "export_saved_model": "saved_model",
    "export_serving_package": "serving",
    "convert_to_tflite": "tflite",
    "tflite_report": "report",
    "format_report": "report",
    "load_model_for_export": "model_source",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"keras_resnest.export.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_resnest.export' has no attribute {name!r}")
