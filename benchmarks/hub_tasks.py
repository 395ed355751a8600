"""ResNeSt in keras-hub's task models, trained on the digit canvases (embedded data).

- segmentation: `keras_hub.models.DeepLabV3ImageSegmenter` on a `ResNeStBackbone` at output
  stride 8 or 16 (or 32), scored by the held-out mean IoU over background + ten digits;
- detection: `keras_hub.models.RetinaNetObjectDetector` on a ResNeSt image encoder, scored by
  the average precision at IoU 0.5 (AP50, mean over the digits) and recall and precision at
  IoU 0.5 (right class, score >= --score-threshold) on held-out canvases.

Both start from random weights (nothing is downloaded). The CI runs small settings
(tests/test_hub.py); the defaults here are the longer run the README quotes.

    python benchmarks/hub_tasks.py segmentation --output-stride 8
    python benchmarks/hub_tasks.py detection
"""
import argparse
import os
import time
from dataclasses import replace

# Keras' "auto" turns XLA on for these models under TensorFlow; on CPU, compiling the train
# step then takes minutes, far longer than these runs.
JIT_COMPILE = False
# DeepLabV3's rates 6/12/18 are for a 33x33 map (513 px at stride 16); canvases of 32-64 px
# give 2x2 to 8x8 maps, where a 3x3 kernel already spans the map. Rate 1 also keeps these runs
# affordable: TensorFlow's CPU gradient of a dilated 2048-channel convolution is slow (one
# train step of the stride-8 segmenter, batch 16, 32 px: 2.4 s with rates 1/1/1, 6.3 s with
# 1/2/3; 64 px: 2.9 s vs 92 s with 6/12/18).
ASPP_RATES = {8: [1, 1, 1], 16: [1, 1, 1], 32: [1, 1, 1]}
EVALUATION_MIN_SCORE = 0.05
SEGMENTATION_KEYS = {  # output stride -> (spatial pyramid pooling level, upsampling to P2)
    8: ("P3", 2),
    16: ("P4", 4),
    32: ("P5", 8),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("segmentation", "detection"))
    parser.add_argument("--model", default="resnest14d")
    parser.add_argument("--output-stride", type=int, default=8, choices=(8, 16, 32),
                        help="backbone output stride (segmentation)")
    parser.add_argument("--dilation-rates", type=int, nargs=3, default=None,
                        help="DeepLabV3's atrous rates (default: scaled to the feature map, "
                        "see ASPP_RATES)")
    parser.add_argument("--size", type=int, default=64, help="canvas side in pixels")
    parser.add_argument("--digit-scale", type=int, default=3,
                        help="digits are enlarged from 8x8 by this factor")
    parser.add_argument("--train", type=int, default=2000, help="training canvases")
    parser.add_argument("--held-out", type=int, default=400, help="held-out canvases")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam's learning rate (default: 1e-3 segmentation, 1e-4 detection, "
                        "where 1e-3 blows the focal loss up in the first epoch)")
    parser.add_argument("--one-class", action="store_true",
                        help="detection: one class, 'digit' (where it is), not which digit")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="detection: the score at which recall and precision are counted "
                        "(the average precision uses every score down to 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def normalised(images):
    """0..255 canvases -> the backbone's input (the ResNeSt converter's ImageNet mean/std)."""
    from keras import ops

    from keras_resnest.hub import ResNeStImageConverter

    return ops.convert_to_numpy(ResNeStImageConverter()(images))


def fit_and_time(model, images, targets, args):
    """`model.fit` on the normalised canvases: (loss per epoch, training seconds)."""
    start = time.perf_counter()
    history = model.fit(normalised(images), targets, batch_size=args.batch_size,
                        epochs=args.epochs, verbose=2)
    return history.history["loss"], time.perf_counter() - start


def deeplab_v3_segmenter(model, output_stride, size, dilation_rates=None):
    """keras-hub's DeepLabV3 segmenter on a ResNeSt encoder of `output_stride`, for the canvases."""
    import keras_hub

    from keras_resnest.hub import ResNeStBackbone
    from keras_resnest.hub.digit_canvases import SEGMENTATION_CLASSES

    encoder = ResNeStBackbone.from_model_name(model, output_stride=output_stride,
                                              image_shape=(size, size, 3))
    level, upsampling = SEGMENTATION_KEYS[output_stride]
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key=level, upsampling_size=upsampling,
        low_level_feature_key="P2", projection_filters=48,
        dilation_rates=dilation_rates or ASPP_RATES[output_stride])
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone,
                                                    num_classes=SEGMENTATION_CLASSES)


def segmentation(args, train, held_out):
    import keras
    import numpy as np

    from keras_resnest.hub.digit_canvases import mean_iou

    segmenter = deeplab_v3_segmenter(args.model, args.output_stride, args.size,
                                     args.dilation_rates)
    # keras-hub's "auto" loss is the one-hot categorical cross-entropy; the masks are sparse.
    segmenter.compile(optimizer=keras.optimizers.Adam(args.learning_rate or 1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy()],
                      jit_compile=JIT_COMPILE)
    losses, seconds = fit_and_time(segmenter, train.images, train.masks, args)
    logits = segmenter.predict(normalised(held_out.images), batch_size=32, verbose=0)
    predicted = np.argmax(logits, axis=-1)
    truth = held_out.masks[..., 0]
    return {"mean_iou": mean_iou(truth, predicted),
            # What "everything is background" scores: the floor a trained model must beat.
            "background_only_mean_iou": mean_iou(truth, np.zeros_like(truth)),
            "pixel_accuracy": float(np.mean(predicted == truth)),
            "background_only_pixel_accuracy": float(np.mean(truth == 0)),
            "first_epoch_loss": losses[0], "last_epoch_loss": losses[-1],
            "train_seconds": seconds}


def initialise_heads_as_retinanet(detector, prior_probability=0.01):
    """The RetinaNet paper's head initialisation (Lin et al. 2017, section 4.1): every head
    convolution N(0, 0.01) with zero bias, except the classification logits' bias
    -log((1 - p) / p), so that each anchor starts at score p.

    keras-hub 0.32 differs twice: its heads' kernels are N(0, 0.05), which over five 3x3x256
    convolutions amplifies the pyramid features ~20x (logits up to +-86 at the first step
    here, a focal loss of ~400), and it puts the prior on the box head instead (built with
    `use_prior_probability=True`), starting every box 4.6 anchor widths off."""
    import keras
    import numpy as np

    prior = -np.log((1 - prior_probability) / prior_probability)
    for head, last_bias in ((detector.classification_head, prior), (detector.box_head, 0.0)):
        layers = [*head.conv_layers, head.prediction_layer]
        for layer in layers:
            layer.kernel.assign(keras.initializers.RandomNormal(stddev=0.01)(layer.kernel.shape))
            bias = last_bias if layer is head.prediction_layer else 0.0
            layer.bias.assign(np.full(layer.bias.shape, bias, "float32"))


def detection(args, train, held_out):
    import keras
    import keras_hub
    import numpy as np

    from keras_resnest.hub import ResNeStBackbone
    from keras_resnest.hub.digit_canvases import NUM_DIGITS, average_precision, detection_scores

    if args.one_class:  # every digit is class 0; padding stays -1
        train, held_out = (replace(canvases, labels=np.minimum(canvases.labels, 0))
                           for canvases in (train, held_out))
    encoder = ResNeStBackbone.from_model_name(args.model, image_shape=(args.size, args.size, 3))
    # Levels P3..P5 (strides 8..32); anchors of 2x the stride (16 px at P3, the 2x digits).
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=5, use_p5=False,
        image_shape=(args.size, args.size, 3))
    anchors = keras_hub.layers.AnchorGenerator(
        "yxyx", min_level=3, max_level=5, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0],
        anchor_size=2)
    # The decoder keeps detections down to the usual evaluation threshold (0.05), so that the
    # average precision sees the whole ranking; keras-hub's default keeps only scores >= 0.5.
    decoder = keras_hub.layers.NonMaxSuppression(
        "yxyx", from_logits=True, confidence_threshold=EVALUATION_MIN_SCORE)
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=1 if args.one_class else NUM_DIGITS,
        bounding_box_format="yxyx",
        anchor_generator=anchors, prediction_decoder=decoder)
    initialise_heads_as_retinanet(detector)
    detector.compile(optimizer=keras.optimizers.Adam(args.learning_rate or 1e-4),
                     jit_compile=JIT_COMPILE)
    losses, seconds = fit_and_time(detector, train.images,
                                   {"boxes": train.boxes, "labels": train.labels}, args)
    predictions = detector.predict(normalised(held_out.images), batch_size=32, verbose=0)
    found = [np.asarray(predictions[key]) for key in ("boxes", "labels", "confidence")]
    return {"ap50": average_precision(held_out, *found),
            **detection_scores(held_out, *found, score_threshold=args.score_threshold),
            "first_epoch_loss": losses[0], "last_epoch_loss": losses[-1],
            "train_seconds": seconds}


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_resnest.hub.digit_canvases import make_canvases

    keras.utils.set_random_seed(args.seed)
    train = make_canvases(args.train, size=args.size, digit_scale=args.digit_scale,
                          split="train", seed=args.seed)
    held_out = make_canvases(args.held_out, size=args.size, digit_scale=args.digit_scale,
                             split="held_out", seed=args.seed + 1)
    run = segmentation if args.task == "segmentation" else detection
    results = run(args, train, held_out)
    stride = args.output_stride if args.task == "segmentation" else 32
    setting = (f"{args.task} {args.model} output stride {stride}, {args.size}px canvases, "
               f"{8 * args.digit_scale}px digits, {args.train} train / {args.held_out} "
               f"held-out canvases, {args.epochs} epochs"
               + (", one class" if args.task == "detection" and args.one_class else ""))
    print(setting)
    for key, value in results.items():
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


if __name__ == "__main__":
    main()
