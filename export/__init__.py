"""Deployment: SavedModel / TF-Serving packages, (quantized) TFLite and ONNX files, with reports.

    >>> import keras_resnest
    >>> from keras_resnest.export import export_saved_model, export_serving_package
    >>> from keras_resnest.export import convert_to_tflite, tflite_report
    >>> from keras_resnest.export import export_onnx, convert_to_onnx, onnx_report

Modules: `image_transform` (decoding in the graph, then `keras_resnest.preprocessing`'s
evaluation transform), `saved_model` (signatures), `serving` (TF-Serving package), `tflite`
(conversion), `calibration` (image folders), `onnx_export` (ONNX, float32 and int8 QDQ), `report`
(TFLite/ONNX vs Keras), `client` (REST/gRPC clients), `cli` (commands). The classifier view
(`keras_resnest.classifier`), the model loader (`keras_resnest.model_source`) and the QAT copy
(`keras_resnest.quantization.quantize_aware`) are in the core, shared with predict and training.
Submodules are imported on first use, so `keras-resnest --help` does not load TensorFlow.
"""
import importlib

_EXPORTS = {
    "export_saved_model": "keras_resnest.export.saved_model",
    "export_serving_package": "keras_resnest.export.serving",
    "convert_to_tflite": "keras_resnest.export.tflite",
    "export_onnx": "keras_resnest.export.onnx_export",
    "convert_to_onnx": "keras_resnest.export.onnx_export",
    "onnx_report": "keras_resnest.export.report",
    "tflite_report": "keras_resnest.export.report",
    "format_report": "keras_resnest.export.report",
    # From the core, which predict and training share with the exporters.
    "load_model_for_export": "keras_resnest.model_source",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return getattr(module, name)
    raise AttributeError(f"module 'keras_resnest.export' has no attribute {name!r}")
