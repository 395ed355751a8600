"""The keras.applications contract: arguments, errors, serialization, mixed precision,
weight porting errors, and a graph that deploys (no Lambda, no forced XLA, TFLite builtins)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resnest
from keras_resnest.layers import ResNeStBottleneck

from tests.helpers import torch_reference as ref


@pytest.fixture(scope="module")
def resnest14d_state():
    return ref.state_dict_numpy(ref.build_randomized("resnest14d"))


def test_named_constructors_and_model_list():
    assert keras_resnest.list_models() == sorted([
        "resnest14d", "resnest26d", "resnest50", "resnest101", "resnest200", "resnest269",
        "resnest50_fast_1s1x64d", "resnest50_fast_2s1x64d", "resnest50_fast_4s1x64d",
        "resnest50_fast_1s2x40d", "resnest50_fast_2s2x40d", "resnest50_fast_4s2x40d",
        "resnest50_fast_1s4x24d"])
    model = keras_resnest.ResNeSt14(weights=None, input_shape=(64, 64, 3), classes=7)
    assert model.name == "resnest14d"
    assert model.output_shape == (None, 7)
    assert model.input.name == "image"
    assert keras_resnest.ResNeSt26(weights=None).get_layer("layer4_1") is not None


@pytest.mark.parametrize("size", [32, 97])
def test_any_input_size_from_32_works_with_the_head(size):
    model = keras_resnest.create_model("resnest14d", weights=None)
    probabilities = model.predict(ref.random_images(1, size, size + 5), verbose=0)
    assert probabilities.shape == (1, 1000)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("pooling,shape", [(None, (None, 2, 3, 2048)), ("avg", (None, 2048)),
                                           ("max", (None, 2048))])
def test_include_top_false_pooling(pooling, shape):
    model = keras_resnest.create_model("resnest14d", weights=None, include_top=False,
                                       input_shape=(64, 96, 3), pooling=pooling)
    assert model.output_shape == shape
    features = model.predict(ref.random_images(2, 64, 96), verbose=0)
    assert features.shape == (2,) + shape[1:]


def test_input_tensor_is_used():
    image = keras.Input((64, 64, 3), name="my_image")
    model = keras_resnest.create_model("resnest14d", weights=None, input_tensor=image)
    assert model.inputs[0] is image


def test_include_preprocessing_false_takes_preprocessed_input(resnest14d_state):
    images = ref.random_images(2, 48, 48)
    inside = keras_resnest.create_model("resnest14d", weights=None)
    outside = keras_resnest.create_model("resnest14d", weights=None, include_preprocessing=False)
    keras_resnest.load_torch_state_dict(inside, resnest14d_state)
    keras_resnest.load_torch_state_dict(outside, resnest14d_state)
    np.testing.assert_allclose(
        outside.predict(keras_resnest.preprocess_input(images), verbose=0),
        inside.predict(images, verbose=0), rtol=1e-4, atol=1e-6)


def test_decode_predictions_names_imagenet_classes():
    classes = keras_resnest.imagenet_classes()
    assert len(classes) == 1000 and classes[0] == ("n01440764", "tench")
    scores = np.zeros((2, 1000), "float32")
    scores[0, 207], scores[1, 999] = 0.9, 0.8
    decoded = keras_resnest.decode_predictions(scores, top=3)
    assert decoded[0][0] == ("n02099601", "golden_retriever", pytest.approx(0.9))
    assert decoded[1][0][:2] == classes[999]
    assert len(decoded[0]) == 3
    with pytest.raises(ValueError, match=r"shape \(samples, 1000\)"):
        keras_resnest.decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="3 channels last"):
        keras_resnest.preprocess_input(np.zeros((1, 3, 8, 8)))


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"model_name": "resnest51"}, r"unknown model 'resnest51' \(did you mean 'resnest50'"),
    ({"model_name": "resnest50", "weights": None, "input_shape": (31, 64, 3)}, r">= 32"),
    ({"model_name": "resnest50", "weights": None, "input_shape": (64, 64, 1)},
     r"3 \(RGB\) channels, got 1"),
    ({"model_name": "resnest50", "weights": None, "input_shape": (3, 64, 64)},
     r"3 \(RGB\) channels, got 64"),
    ({"model_name": "resnest50", "weights": None, "input_shape": (64, 64)},
     r"\(height, width, 3\)"),
    ({"model_name": "resnest50", "weights": None, "include_top": False, "pooling": "mean"},
     r'pooling must be None, "avg" or "max"'),
    ({"model_name": "resnest50", "weights": None, "output_stride": 4},
     r"output_stride must be 32, 16 or 8"),
    ({"model_name": "resnest50", "weights": "/no/such/file.h5"}, r"does not exist"),
    ({"model_name": "resnest50", "weights": None, "drop_path_rate": 1.5},
     r"drop_path_rate must be in \[0, 1\)"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    name = kwargs.pop("model_name")
    with pytest.raises(ValueError, match=message):
        keras_resnest.create_model(name, **kwargs)


def test_state_dict_errors_name_the_key_and_shapes(resnest14d_state):
    model = keras_resnest.create_model("resnest14d", weights=None)
    missing = dict(resnest14d_state)
    del missing["layer2.0.conv2.fc1.bias"]
    with pytest.raises(ValueError, match=r"missing 'layer2\.0\.conv2\.fc1\.bias'.*\(64,\)"):
        keras_resnest.load_torch_state_dict(model, missing)
    extra = dict(resnest14d_state, **{"layer1.1.conv1.weight": np.zeros((64, 256, 1, 1))})
    with pytest.raises(ValueError, match=r"Unexpected key 'layer1\.1\.conv1\.weight'"):
        keras_resnest.load_torch_state_dict(model, extra)
    wrong = dict(resnest14d_state, **{"layer3.0.conv3.weight": np.zeros((1024, 128, 1, 1))})
    with pytest.raises(ValueError, match=r"'layer3\.0\.conv3\.weight'.*expects \(1024, 256, 1, 1\)"
                                         r".*has \(1024, 128, 1, 1\)"):
        keras_resnest.load_torch_state_dict(model, wrong)


def test_failed_port_leaves_model_untouched(resnest14d_state):
    model = keras_resnest.create_model("resnest14d", weights=None)
    before = [w.copy() for w in model.get_weights()]
    # The last tensors are wrong: nothing before them may have been assigned either.
    wrong = dict(resnest14d_state, **{"fc.weight": np.zeros((1000, 7))})
    with pytest.raises(ValueError, match=r"'fc\.weight'.*expects \(1000, 2048\)"):
        keras_resnest.load_torch_state_dict(model, wrong)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs", [{"include_top": False}, {"classes": 10}])
def test_backbone_only_port_skips_the_head_and_says_so(kwargs, resnest14d_state):
    model = keras_resnest.create_model("resnest14d", weights=None, **kwargs)
    report = keras_resnest.load_torch_state_dict(model, resnest14d_state)
    assert report.skipped == ["fc.bias", "fc.weight"]
    assert "fc.weight" in report.notes[0]
    conv = model.get_layer("conv1_0").kernel.numpy()
    np.testing.assert_array_equal(conv, resnest14d_state["conv1.0.weight"].transpose(2, 3, 1, 0))


# --- serialization and precision ----------------------------------------------------------

@pytest.mark.slow
def test_keras_file_round_trip_is_exact(tmp_path, resnest14d_state):
    model = keras_resnest.create_model("resnest50_fast_2s2x40d", weights=None, drop_path_rate=0.1,
                                       dropblock_rate=0.1, drop_rate=0.2)
    images = ref.random_images(2, 40, 52)
    expected = model.predict(images, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)
    assert restored.get_layer("layer3_0").get_config() == model.get_layer("layer3_0").get_config()


@pytest.mark.slow
def test_a_fresh_process_loads_a_keras_file_with_only_import_keras_resnest(tmp_path):
    """A user's script: `import keras_resnest; keras_resnest.load_model(...)`, no model built
    first (the layer classes must be registered by load_model itself)."""
    import subprocess
    import sys

    model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(32, 32, 3))
    model.save(tmp_path / "model.keras")
    script = ("import sys, keras_resnest\n"
              "model = keras_resnest.load_model(sys.argv[1])\n"
              "print(model.count_params())\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.keras")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == str(model.count_params())


def test_synchronized_batch_norm_reaches_every_norm_and_is_not_saved():
    def norms(model):
        return [layer for layer in model._flatten_layers()
                if isinstance(layer, keras.layers.BatchNormalization)]

    # resnest14d: 3 stem norms, per block bn1, bn3, downsample_bn and split attention's bn0, bn1.
    plain = keras_resnest.create_model("resnest14d", weights=None, input_shape=(32, 32, 3))
    assert len(norms(plain)) == 3 + 4 * 5 and not any(n.synchronized for n in norms(plain))
    synced = keras_resnest.create_model("resnest14d", weights=None, input_shape=(32, 32, 3),
                                        synchronized_batch_norm=True)
    assert all(n.synchronized for n in norms(synced))
    # A property of the run, not of the model: a saved model loads on every backend.
    assert "synchronized" not in str(synced.get_config())
    restored = synced.__class__.from_config(synced.get_config())
    assert not any(n.synchronized for n in norms(restored))
    # One replica (no strategy, or a one-device MirroredStrategy): nothing to synchronize.
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        block = ResNeStBottleneck(16, downsample=True)
        block.build((None, 8, 8, 32))
    assert not any(n.synchronized for n in norms(block))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_logits_close_to_float32(policy, resnest14d_state):
    images = ref.random_images(2, 64, 64)
    reference = keras_resnest.create_model("resnest14d", weights=None, classifier_activation=None)
    keras_resnest.load_torch_state_dict(reference, resnest14d_state)
    expected = reference.predict(images, verbose=0)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = keras_resnest.create_model("resnest14d", weights=None, classifier_activation=None)
        probabilities = keras_resnest.create_model("resnest14d", weights=None)
    finally:
        keras.config.set_dtype_policy(previous)
    keras_resnest.load_torch_state_dict(model, resnest14d_state)
    block = model.get_layer("layer2_0")
    assert block.compute_dtype == policy.split("_")[1]
    assert model.get_layer("fc").compute_dtype == "float32"
    assert probabilities.get_layer("predictions").compute_dtype == "float32"
    logits = model.predict(images, verbose=0)
    assert logits.dtype == np.float32
    assert ref.relative_error(logits, expected) <= 1e-2


# --- a graph that deploys ----------------------------------------------------------------

def _all_layers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        yield layer


def test_no_lambda_layers():
    model = keras_resnest.create_model("resnest50_fast_4s2x40d", weights=None)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in _all_layers(model))
    assert sum(isinstance(layer, ResNeStBottleneck) for layer in _all_layers(model)) == 16


@pytest.mark.slow
def test_saved_model_has_no_forced_xla_and_tflite_uses_builtin_ops(tmp_path):
    # cardinality 2 x radix 4: the most grouped convolutions of any model. Seeded: with some
    # random initialisations a probability differs by ~2e-6 between TFLite and TF.
    keras.utils.set_random_seed(0)
    model = keras_resnest.create_model("resnest50_fast_4s2x40d", weights=None,
                                       input_shape=(64, 64, 3))
    export_dir = str(tmp_path / "saved_model")
    model.export(export_dir, verbose=False)
    graph = tf.saved_model.load(export_dir)
    functions = graph.signatures["serving_default"].graph.as_graph_def().library.function
    for function in functions:
        assert "_XlaMustCompile" not in function.attr or not function.attr["_XlaMustCompile"].b, \
            function.signature.name
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        assert b"_XlaMustCompile" not in f.read()

    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()   # raises if any op is not a TFLite builtin
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    op_names = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(name.startswith("Flex") for name in op_names)
    assert "CONV_2D" in op_names and "SOFTMAX" in op_names
    images = ref.random_images(1, 64, 64)
    runner = interpreter.get_signature_runner()
    (output,) = runner(image=images).values()
    np.testing.assert_allclose(output, model.predict(images, verbose=0), rtol=1e-4, atol=1e-6)
