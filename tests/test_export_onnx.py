"""The ONNX export: parity with the Keras model in onnxruntime and OpenVINO, the input/output
contract, a process without TensorFlow, and clear errors. The CLI's float and int8 exports of a
fine-tuned model are in test_export_cli.py (they share its trained digits model)."""
import subprocess
import sys

import numpy as np
import pytest

import keras_resnest
from keras_resnest.export import onnx_export, report

from tests.helpers import export_helpers as helpers
from tests.helpers import torch_reference as ref

MAX_RELATIVE_LOGIT_DIFFERENCE = 1e-5  # the bar for onnxruntime against Keras


def randomized_model(name, size=helpers.SMALL_SIZE):
    """`name` at `size` px with the official random init and random BatchNorm statistics."""
    if name == "resnest14d" and size == helpers.SMALL_SIZE:
        return helpers.small_model()
    model = keras_resnest.create_model(name, weights=None, input_shape=(size, size, 3))
    keras_resnest.load_torch_state_dict(model, ref.state_dict_numpy(ref.build_randomized(name)))
    return model


def relative_difference(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def images(count, size=helpers.SMALL_SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


@pytest.mark.parametrize("name", [
    "resnest14d",  # radix 2: softmax attention
    # radix 1 (sigmoid attention), 4 groups, avd first
    pytest.param("resnest50_fast_1s4x24d", marks=pytest.mark.slow),
])  # the subset of tests/test_backends.py; resnest50_fast_4s2x40d (8 groups) measured 4.9e-7
@pytest.mark.slow
def test_onnxruntime_matches_keras_with_a_dynamic_batch(name):
    import onnx
    import onnxruntime

    model = randomized_model(name)
    onnx_bytes = onnx_export.convert_to_onnx(model)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("image", ["batch", helpers.SMALL_SIZE, helpers.SMALL_SIZE, 3])]
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    batch = images(3)
    expected = report.keras_logits(model, batch)
    for count in (1, 3):  # one graph, any batch
        logits, probabilities = session.run(None, {"image": batch[:count]})
        error = relative_difference(logits, expected[:count])
        print(f"{name} batch {count}: max relative logit difference {error:.2e}")
        assert error <= MAX_RELATIVE_LOGIT_DIFFERENCE
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        assert (probabilities.argmax(-1) == expected[:count].argmax(-1)).all()
    graph = onnx.load_from_string(onnx_bytes).graph
    # One node per grouped convolution, as in the official graph, and nothing but constants
    # besides the image: the normalisation runs inside.
    conv_groups = sorted({attribute.i for node in graph.node if node.op_type == "Conv"
                          for attribute in node.attribute if attribute.name == "group"})
    expected_groups = {"resnest14d": [1, 2], "resnest50_fast_1s4x24d": [1, 4]}[name]
    assert conv_groups == expected_groups
    assert [value.name for value in graph.input] == ["image"]
    # export/onnx_rewrites.py: what onnxruntime would not fuse is gone, and the parity above
    # holds with it gone (random BatchNorm statistics, so a wrong fold would show).
    producers = {output: node for node in graph.node for output in node.output}
    assert not [node.name for node in graph.node if node.op_type == "BatchNormalization"]
    max_pool = next(node for node in graph.node if node.op_type == "MaxPool")
    assert producers[max_pool.input[0]].op_type == "Relu"
    first_conv = next(node for node in graph.node if node.op_type == "Conv")
    image_path = [producers[first_conv.input[0]].op_type]
    image_path.append(producers[producers[first_conv.input[0]].input[0]].op_type)
    assert image_path == ["Transpose", "Sub"]  # the 1/std scale is in the kernel


@pytest.mark.slow
def test_openvino_runs_the_export():
    import openvino

    model = helpers.small_model()
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(onnx_export.convert_to_onnx(model)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    batch = images(2, seed=1)
    result = compiled(batch)
    logits = result[compiled.output("logits")]
    error = relative_difference(logits, report.keras_logits(model, batch))
    print(f"OpenVINO: max relative logit difference {error:.2e}")
    assert error <= MAX_RELATIVE_LOGIT_DIFFERENCE
    assert result[compiled.output("probabilities")].shape == (2, 1000)


@pytest.mark.slow
def test_the_file_runs_without_tensorflow_or_keras(tmp_path):
    path = onnx_export.export_onnx(helpers.small_model(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", images(2))
    expected = report.keras_logits(helpers.small_model(), images(2))
    script = (
        "import sys, numpy as np, onnxruntime\n"
        f"session = onnxruntime.InferenceSession({str(path)!r})\n"
        f"logits = session.run(['logits'], {{'image': np.load({str(tmp_path / 'x.npy')!r})}})[0]\n"
        "assert not {'tensorflow', 'keras', 'keras_resnest'} & set(sys.modules)\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, logits)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    difference = relative_difference(np.load(tmp_path / "y.npy"), expected)
    assert difference <= MAX_RELATIVE_LOGIT_DIFFERENCE


def test_export_keeps_an_existing_file_and_checks_its_arguments(tmp_path):
    model = helpers.small_model()
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        onnx_export.export_onnx(model, taken)
    assert taken.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match="int8 quantization needs calibration images"):
        onnx_export.export_onnx(model, tmp_path / "q.onnx", quantize="int8")
    with pytest.raises(
        ValueError, match=r"calibration images must be a non-empty \(N, 64, 64, 3\)"
    ):
        onnx_export.export_onnx(
            model, tmp_path / "q.onnx", quantize="int8", calibration_data=images(2, size=32)
        )
    with pytest.raises(ValueError, match="supports quantize modes none, int8; got 'fp16'"):
        onnx_export.export_onnx(model, tmp_path / "q.onnx", quantize="fp16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


@pytest.mark.slow
def test_int8_export_is_quantized_and_close_to_keras():
    import onnx

    model = helpers.small_model()
    calibration = images(16, seed=2)
    int8_bytes = onnx_export.convert_to_onnx(model, "int8", calibration_data=calibration)
    ops = [node.op_type for node in onnx.load_from_string(int8_bytes).graph.node]
    # Every convolution but the stem's first reads dequantized int8 weights and activations.
    assert ops.count("DequantizeLinear") > 2 * ops.count("Conv") > 0
    result = report.onnx_report(int8_bytes, model, images(8, seed=3), latency_runs=3)
    print(result)
    # Measured: 1.8e-2 relative logit difference, 100% top-1 on these 8 images.
    assert result["runtime"] == "onnxruntime" and result["max_rel_logit_diff"] < 0.05
    assert result["size_bytes"] < 0.35 * len(onnx_export.convert_to_onnx(model))


def test_a_missing_extra_is_one_line_naming_the_packages(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("onnx", "tf2onnx") else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError) as error:
        onnx_export.convert_to_onnx(helpers.small_model())
    assert str(error.value) == (
        "ONNX export needs onnx and tf2onnx, which are not installed: "
        'pip install "keras-resnest[onnx]"'
    )


def test_int8_also_needs_sympy_which_onnxruntime_does_not_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sympy" else real_find_spec(name, *a),
    )
    onnx_export.check_onnx_installed("none")  # float export does not need it
    with pytest.raises(
        ValueError,
        match=r"needs sympy, which is not installed: pip install "
        r'"keras-resnest\[onnx\]"',
    ):
        onnx_export.convert_to_onnx(helpers.small_model(), "int8", calibration_data=images(2))
