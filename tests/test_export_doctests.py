"""The runnable examples in the docstrings of keras_resnest.export (and of the core modules it
builds on) run and say what they show."""
import doctest
import importlib
import tempfile

import pytest

MODULES = ["keras_resnest.export." + name for name in (
    "calibration", "client", "image_transform", "onnx_export", "output_paths", "report",
    "saved_model", "serving", "tflite")] + [
    # The core modules the exporters build on.
    "keras_resnest.classifier", "keras_resnest.model_source", "keras_resnest.preprocessing",
    "keras_resnest.quantization"]
SLOW = {"keras_resnest.export." + name for name in (
    "onnx_export", "report", "saved_model", "serving", "tflite")}  # their examples export


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW
                                  else name for name in MODULES])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # examples' mkdtemp() land here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
