"""TFLite conversion in every quantization mode, run in the LiteRT interpreter (ai_edge_litert).

Float modes use ResNeSt-14d at 64 px with reference-converted (official random init, random BN
state) weights. The int8 accuracy test uses a ResNeSt-14d trained on real images (the digits).
`python -m benchmarks.tflite_report` prints the figures these tests measure (the TFLite
table of docs/export.md); the bars sit just above them.
"""
import numpy as np
import pytest
import tensorflow as tf

from keras_resnest.export import calibration, report, tflite

from tests.helpers import export_helpers as helpers
from tests.helpers import odd_images

pytestmark = pytest.mark.slow  # the whole file: its float32 flatbuffer fixture converts a model


@pytest.fixture(scope="module")
def images():
    natural = [helpers.natural_image(64, 64, seed) for seed in range(5)]
    noise = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3))
    return np.concatenate([np.stack(natural), noise]).astype(np.float32)


@pytest.fixture(scope="module")
def float32_flatbuffer():
    return tflite.convert_to_tflite(helpers.small_model(), "none")


def test_float32_matches_keras(float32_flatbuffer, images):
    result = report.tflite_report(float32_flatbuffer, helpers.small_model(), images,
                                  latency_runs=3)
    # The float32 target (measured 1.1e-06); also catches the all-NaN output of the
    # concrete-function route.
    assert result["max_rel_logit_diff"] <= 1e-5
    assert result["top1_agreement"] == 1.0
    assert result["input_dtype"] == "float32"
    assert result["latency_ms_median"] > 0 and result["num_threads"] == 2


def test_only_builtin_ops_and_grouped_conv_kept(float32_flatbuffer):
    ops = tflite.check_builtin_ops(float32_flatbuffer)
    assert "CONV_2D" in ops and "SOFTMAX" in ops
    assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]


def test_signature_names(float32_flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=float32_flatbuffer).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["image"],
                                              "outputs": ["logits", "probabilities"]}}


# Measured: fp16 4.1e-04, dynamic 1.19e-02 relative logit difference, both 100% top-1.
# (The smallest top-1/top-2 logit gap of these images is 2.3e-02 of the largest logit.)
@pytest.mark.parametrize("mode, size_ratio, max_rel", [("fp16", (0.45, 0.55), 1e-3),
                                                       ("dynamic", (0.2, 0.3), 2e-2)])
def test_weight_quantized_modes(mode, size_ratio, max_rel, float32_flatbuffer, images):
    flatbuffer = tflite.convert_to_tflite(helpers.small_model(), mode)
    result = report.tflite_report(flatbuffer, helpers.small_model(), images, latency_runs=3)
    ratio = len(flatbuffer) / len(float32_flatbuffer)
    assert size_ratio[0] <= ratio <= size_ratio[1], ratio
    assert result["max_rel_logit_diff"] <= max_rel, result["max_rel_logit_diff"]
    assert result["top1_agreement"] == 1.0
    assert result["input_dtype"] == "float32"


@pytest.mark.slow
def test_int8_with_int8_io_from_a_tf_data_dataset():
    model = helpers.digits_model()
    train_images, _, test_images, _ = helpers.digits_split()
    dataset = tf.data.Dataset.from_tensor_slices(train_images[:64]).batch(16)
    flatbuffer = tflite.convert_to_tflite(model, "int8", calibration_data=dataset, int8_io="int8")
    tflite.check_builtin_ops(flatbuffer)
    from ai_edge_litert.interpreter import Interpreter

    tensor_types = {np.dtype(t["dtype"]).name
                    for t in Interpreter(model_content=flatbuffer).get_tensor_details()}
    assert "float32" not in tensor_types and "int8" in tensor_types  # fully integer
    # All 360 held-out images. The figures depend on the trained model, and a host's float32
    # rounding changes what 4 epochs train as much as another seed does. Measured over six
    # trained models (seeds 0-2, each with the fused training step and with Keras' ops):
    # largest relative logit difference 0.020-0.175, top-1 agreement 98.6-100%. A broken int8
    # model (wrong scales, a float op left in) misses both by far.
    result = report.tflite_report(flatbuffer, model, test_images, latency_runs=3)
    assert result["input_dtype"] == "int8"
    assert result["max_rel_logit_diff"] <= 0.25, result["max_rel_logit_diff"]
    assert result["top1_agreement"] >= 0.98


def test_calibration_folder_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        calibration.list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="contains no images"):
        calibration.list_images(tmp_path / "empty")
    bad = tmp_path / "bad"
    helpers.write_digit_folder(bad, helpers.digits_split()[0][:2])
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    # A bad file is named with its reason and skipped; the good ones calibrate.
    assert calibration.load_image_folder(bad, 32).shape == (2, 32, 32, 3)
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: {bad / 'broken.jpg'}: cannot decode the image")
    assert line.endswith("; skipped")
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "bomb.png").write_bytes(odd_images.png_header_bomb(20000, 20000))
    with pytest.raises(ValueError, match="none of its 1 image files can be read "
                       r"\(bomb.png: declares 20000x20000 pixels; the limit is 50000000"):
        calibration.check_images(only_bad)
    with pytest.raises(ValueError, match="none of the 1 image files can be read"):
        calibration.load_image_folder(only_bad, 32)


def test_calibration_folder_reproduces_training_images(tmp_path):
    train_images = helpers.digits_split()[0][:5]
    folder = helpers.write_digit_folder(tmp_path / "digits", train_images)
    np.testing.assert_array_equal(calibration.load_image_folder(folder, 32), train_images)


def test_bad_conversion_arguments():
    model = helpers.small_model()
    with pytest.raises(ValueError, match="unknown quantize mode 'int4'"):
        tflite.convert_to_tflite(model, "int4")
    with pytest.raises(ValueError, match="needs calibration images"):
        tflite.convert_to_tflite(model, "int8")
    with pytest.raises(ValueError, match=r"shape \(N, 64, 64, 3\)"):
        tflite.convert_to_tflite(model, "int8", calibration_data=np.zeros((4, 32, 32, 3)))
    with pytest.raises(ValueError, match="built for 64x64"):
        tflite.convert_to_tflite(model, "none", image_size=96)


def test_a_model_needing_tf_ops_fails_conversion_loudly():
    import keras

    class BesselI0e(keras.layers.Layer):  # a TF op with no TFLite builtin kernel
        def call(self, x):
            return tf.math.special.bessel_i0e(x)

    inputs = keras.Input((32, 32, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D()(BesselI0e()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(features))
    with pytest.raises(RuntimeError, match="builtin ops only(.|\n)*BesselI0e"):
        tflite.convert_to_tflite(model)
