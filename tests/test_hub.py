"""keras-hub integration: `ResNeStBackbone` as a `FeaturePyramidBackbone`, the
classifier with its preprocessing and presets, and keras-hub's DeepLabV3 and RetinaNet task
models trained on the digit canvases (through `python -m benchmarks.hub_tasks`, small
settings; the task models themselves come from digit_tasks.models).

Presets come through the weights download: the official reference with random weights is
served from 127.0.0.1 as the resnest14d ImageNet file (tests/test_weights.py's server).
"""
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

import keras_resnest
from keras_resnest.hub import (
    PRESETS,
    ResNeStBackbone,
    ResNeStImageClassifier,
    ResNeStImageConverter,
    preset_directory,
)
from keras_resnest.weights import pretrained

from digit_tasks.models import (
    SEGMENTATION_KEYS,
    deeplab_v3_segmenter,
    normalised,
    retinanet_detector,
)
from tests.helpers import torch_reference as ref
from tests.test_weights import WeightsServer, publish, torch_bytes

ROOT = Path(__file__).resolve().parents[1]
HUB_PARITY = 5e-6  # the parity bar of tests/test_model_parity.py


@pytest.fixture
def served_14d(tmp_path, monkeypatch):
    """resnest14d's ImageNet file served locally (a random official model) and an empty cache."""
    server = WeightsServer()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(pretrained.MIRROR_ENV, server.url)
    reference = ref.build_randomized("resnest14d", seed=11)
    publish(server, monkeypatch, "resnest14d", torch_bytes(reference.state_dict()))
    yield reference
    server.stop()


@pytest.mark.parametrize("output_stride,levels", [
    (32, {"P2": "layer1", "P3": "layer2", "P4": "layer3", "P5": "layer4"}),
    (16, {"P2": "layer1", "P3": "layer2", "P4": "layer4"}),
    (8, {"P2": "layer1", "P3": "layer4"}),
])
def test_pyramid_keys_name_the_true_stride_and_hold_the_stage_outputs(output_stride, levels):
    size = 64
    backbone = ResNeStBackbone.from_model_name("resnest14d", output_stride=output_stride)
    model = keras_resnest.create_model("resnest14d", weights=None, include_top=False,
                                       include_preprocessing=False, output_stride=output_stride)
    for layer in backbone.layers:  # the same layers, by name
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    images = np.random.RandomState(0).normal(size=(2, size, size, 3)).astype("float32")
    pyramid = keras.Model(backbone.inputs, backbone.pyramid_outputs)(images)
    stages = keras.Model(model.inputs, {f"layer{s}": model.get_layer(f"layer{s}_0").output
                                        for s in range(1, 5)})(images)
    assert sorted(pyramid) == sorted(levels)
    for level, stage in levels.items():
        assert pyramid[level].shape[1] == size // 2 ** int(level[1]), level
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(pyramid[level]),
                                      keras.ops.convert_to_numpy(stages[stage]))


def test_backbone_config_round_trips_and_rejects_bad_arguments():
    backbone = ResNeStBackbone.from_model_name("resnest50_fast_1s4x24d", output_stride=16)
    clone = ResNeStBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert clone.count_params() == backbone.count_params()
    with pytest.raises(ValueError, match="output_stride must be 32, 16 or 8"):
        ResNeStBackbone([1, 1, 1, 1], output_stride=4)
    with pytest.raises(ValueError, match="channels_last only"):
        ResNeStBackbone([1, 1, 1, 1], data_format="channels_first")
    with pytest.raises(ValueError, match="4 stages"):
        ResNeStBackbone([1, 1, 1])


def test_converter_applies_the_official_evaluation_transform():
    import tensorflow as tf

    from keras_resnest.hub.classifier import IMAGENET_OFFSET, IMAGENET_SCALE
    from keras_resnest.preprocessing import eval_transform

    rng = np.random.RandomState(1)
    # A smooth photo-like image (the aspect-crop comparison below needs one).
    small = rng.uniform(0, 255, (12, 16, 3)).astype("float32")
    image = tf.image.resize(small, (150, 200), method="bilinear").numpy().round()
    converted = keras.ops.convert_to_numpy(ResNeStImageConverter(image_size=(64, 64))(image[None]))
    official = eval_transform(tf.constant(image, tf.uint8), 64).numpy()
    pixels = (converted[0] - np.array(IMAGENET_OFFSET)) / np.array(IMAGENET_SCALE)
    difference = np.abs(pixels - official)
    print(f"converter vs official transform: mean {difference.mean():.3f}, "
          f"max {difference.max():.2f} grey levels")
    # One transform: the converter's pixels are the official ones, up to float rounding.
    assert difference.max() < 1e-3
    # Without the official crop (ImageConverter's aspect crop only) it is far off.
    plain = ResNeStImageConverter(image_size=(64, 64), official_crop=False)(image[None])
    plain = (keras.ops.convert_to_numpy(plain)[0] - IMAGENET_OFFSET) / IMAGENET_SCALE
    assert np.abs(plain - official).mean() > 2.0


def test_preset_classifier_matches_the_official_model_and_round_trips(served_14d, tmp_path):
    assert "resnest14d_imagenet" in PRESETS and len(PRESETS) == 13
    classifier = ResNeStImageClassifier.from_preset("resnest14d_imagenet")
    images = ref.random_images(2, 240, 300, seed=2)
    inputs = keras.ops.convert_to_numpy(classifier.preprocessor(images))
    assert inputs.shape == (2, 224, 224, 3)
    logits = keras.ops.convert_to_numpy(classifier(inputs))
    with torch.no_grad():
        expected = served_14d(torch.from_numpy(
            np.ascontiguousarray(inputs.transpose(0, 3, 1, 2)))).numpy()
    error = ref.relative_error(logits, expected)
    print(f"keras-hub classifier vs official resnest14d: {error:.2e}")
    assert error <= HUB_PARITY
    np.testing.assert_allclose(classifier.predict(images, verbose=0), logits, rtol=0, atol=1e-5)

    # The preset is a keras-hub directory in the cache: loaded again without conversion, and
    # save_to_preset -> from_preset (our class, keras-hub's base class) round-trips exactly.
    directory = preset_directory("resnest14d_imagenet")
    assert Path(directory).is_relative_to(tmp_path)
    saved = tmp_path / "my_preset"
    classifier.save_to_preset(str(saved))
    for loaded in (ResNeStImageClassifier.from_preset(str(saved)),
                   keras_hub_image_classifier(str(saved)),
                   ResNeStImageClassifier.from_preset("resnest14d_imagenet"),
                   # keras-hub's own loader, by our registered name (docs/keras-hub.md)
                   keras_hub_image_classifier("resnest14d_imagenet")):
        assert type(loaded) is ResNeStImageClassifier
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(inputs)), logits)
    backbone = ResNeStBackbone.from_preset("resnest14d_imagenet", output_stride=8)
    assert sorted(backbone.pyramid_outputs) == ["P2", "P3"]  # docs/keras-hub.md's dilated backbone
    np.testing.assert_array_equal(backbone.get_layer("layer4_0").get_weights()[0],
                                  classifier.backbone.get_layer("layer4_0").get_weights()[0])


def keras_hub_image_classifier(preset):
    import keras_hub

    return keras_hub.models.ImageClassifier.from_preset(preset)


def test_keras_hub_lists_our_presets_without_downloading(tmp_path, monkeypatch):
    import keras_hub

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    for cls in (keras_hub.models.ImageClassifier, keras_hub.models.Backbone,
                ResNeStImageClassifier, ResNeStBackbone):
        assert set(PRESETS) <= set(cls.presets), cls.__name__
    assert ResNeStImageClassifier.presets["resnest50_imagenet"]["metadata"]["image_size"] == 224
    assert not (tmp_path / "keras_home").exists()  # listing wrote and fetched nothing


def test_unknown_preset_names_the_presets():
    with pytest.raises(ValueError, match="resnest50_imagenet"):
        preset_directory("resnest51_imagenet")


def test_missing_keras_hub_is_one_clear_error():
    code = ("import sys; sys.modules['keras_hub'] = None\n"
            "try:\n    import keras_resnest.hub\n"
            "except ImportError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.stdout.strip() == ('keras_resnest.hub needs keras-hub, which is not installed: '
                                     'pip install "keras-resnest[hub]"'), result.stderr[-2000:]


def _hub_task(*args):
    result = subprocess.run([sys.executable, "-m", "benchmarks.hub_tasks", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    return {key: float(value) for key, value in
            re.findall(r"^\s+(\w+): ([\d.]+)$", result.stdout, re.MULTILINE)}


# Small runs: 32 px canvases with two 16 px digits, random initialisation, a few epochs.
SMALL = ["--size", "32", "--digit-scale", "2", "--train", "256", "--held-out", "64",
         "--batch-size", "16"]


@pytest.mark.parametrize("output_stride", sorted(SEGMENTATION_KEYS))
def test_deeplab_v3_on_a_dilated_encoder_predicts_every_pixel(output_stride):
    # The pooled level and the upsampling to P2 must agree for each stride, or keras-hub's
    # decoder cannot join the two (it raises while building).
    from digit_tasks.canvases import SEGMENTATION_CLASSES, make_canvases

    size = 32
    segmenter = deeplab_v3_segmenter("resnest14d", output_stride, size)
    canvases = make_canvases(2, size=size, digit_scale=2, seed=0)
    logits = segmenter.predict(normalised(canvases.images), verbose=0)
    assert logits.shape == (2, size, size, SEGMENTATION_CLASSES)


@pytest.mark.slow
def test_deeplab_v3_with_a_resnest_backbone_learns_to_segment_digits():
    # One training run, at stride 16; the test above builds every stride. Measured with these
    # settings at stride 8: mean IoU 0.18 and 0.255 (two runs; 64 and 96 held-out canvases),
    # 0.142 after 2 epochs of 256 canvases; at stride 16: 0.254 (64
    # held-out canvases; calling every pixel background: 0.076), 138 s of training.
    scores = _hub_task("segmentation", "--output-stride", "16", "--epochs", "3",
                       *SMALL, "--train", "384")
    # Calling every pixel background scores ~0.08 (its IoU ~0.85 over the 11 classes present).
    assert scores["mean_iou"] >= 1.5 * scores["background_only_mean_iou"], scores
    assert scores["last_epoch_loss"] < scores["first_epoch_loss"] / 2, scores


def test_average_precision_follows_the_ranking_of_the_detections():
    from digit_tasks.canvases import average_precision, make_canvases

    canvases = make_canvases(8, size=32, digit_scale=2, seed=0)
    # Each digit detected once, plus a box 8 px off (IoU < 0.5) of the same class.
    boxes = np.concatenate([canvases.boxes, canvases.boxes + 8], axis=1)
    labels = np.concatenate([canvases.labels, canvases.labels], axis=1)
    hits_first = np.concatenate([np.full(canvases.labels.shape, 0.9),
                                 np.full(canvases.labels.shape, 0.5)], axis=1)
    assert average_precision(canvases, boxes, labels, hits_first) == 1.0
    # Misses ranked first: precision 1/2 when the last digit is found, so AP 0.5 per class.
    assert average_precision(canvases, boxes, labels, 1.0 - hits_first) == pytest.approx(0.5)
    # Wrong classes find nothing.
    assert average_precision(canvases, canvases.boxes, (canvases.labels + 1) % 10,
                             np.ones(canvases.labels.shape)) == 0.0


@pytest.mark.slow
def test_retinanet_with_a_resnest_encoder_trains_and_decodes_to_the_canvas_boxes():
    from digit_tasks.canvases import detection_scores, make_canvases

    # keras-hub's label encoding of the canvases' boxes, decoded back through our encoder's
    # anchors with certain class scores, must give the boxes again (no format or level mix-up).
    size = 32
    canvases = make_canvases(32, size=size, digit_scale=2, split="held_out", seed=3)
    detector = retinanet_detector("resnest14d", size, num_classes=10)
    deltas, labels = detector.label_encoder(images=canvases.images, gt_boxes=canvases.boxes,
                                            gt_classes=canvases.labels)
    labels = keras.ops.convert_to_numpy(labels)
    certain = np.where(labels[..., None] == np.arange(10), 10.0, -10.0).astype("float32")
    decoded = detector.decode_predictions({"bbox_regression": deltas, "cls_logits": certain},
                                          canvases.images)
    scores = detection_scores(canvases, *(keras.ops.convert_to_numpy(decoded[key])
                                          for key in ("boxes", "labels", "confidence")))
    # Every decoded box is a digit's; the few digits without an anchor of IoU >= 0.5 at these
    # levels have no positive anchor to decode (measured: 41 of these 51 digits decode).
    assert scores["precision"] == 1.0 and scores["recall"] >= 0.75, scores

    # Training through benchmarks.hub_tasks, one class ("a digit is here"): measured AP50
    # 0.38, recall 0.34 at score 0.3, in 64 s. An untrained detector scores ~0 (its boxes are
    # the anchors and every score the 0.01 prior, under the 0.05 decoder threshold).
    trained = _hub_task("detection", "--one-class", "--epochs", "2", *SMALL)
    assert trained["ap50"] >= 0.15 and trained["recall"] >= 0.15, trained
    assert trained["last_epoch_loss"] < trained["first_epoch_loss"], trained


@pytest.mark.parametrize("name", ["keras_resnest.hub", "digit_tasks.canvases",
                                  "keras_resnest.hub.presets",
                                  "keras_resnest.hub.classifier"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
