"""ResNeSt in keras-hub's task models, trained on the digit canvases (embedded data).

- segmentation: `keras_hub.models.DeepLabV3ImageSegmenter` on a `ResNeStBackbone` at output
  stride 8 or 16 (or 32), scored by the held-out mean IoU over background + ten digits;
- detection: `keras_hub.models.RetinaNetObjectDetector` on a ResNeSt image encoder, scored by
  the average precision at IoU 0.5 (AP50, mean over the digits) and recall and precision at
  IoU 0.5 (right class, score >= --score-threshold) on held-out canvases.

Both start from random weights (nothing is downloaded). The CI runs small settings
(tests/test_hub.py); the defaults here are the longer run docs/keras-hub.md quotes.

    python -m benchmarks.hub_tasks segmentation --output-stride 8
    python -m benchmarks.hub_tasks detection
"""
import argparse
import os
import time
from dataclasses import replace

# Keras' "auto" turns XLA on for these models under TensorFlow; on CPU, compiling the train
# step then takes minutes, far longer than these runs.
JIT_COMPILE = False


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("segmentation", "detection"))
    parser.add_argument("--model", default="resnest14d")
    parser.add_argument("--output-stride", type=int, default=8, choices=(8, 16, 32),
                        help="backbone output stride (segmentation)")
    parser.add_argument("--dilation-rates", type=int, nargs=3, default=None,
                        help="DeepLabV3's atrous rates (default: scaled to the feature map, "
                        "see digit_tasks.models.ASPP_RATES)")
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


def fit_and_time(model, images, targets, args):
    """`model.fit` on the normalised canvases: (loss per epoch, training seconds)."""
    from digit_tasks.models import normalised

    start = time.perf_counter()
    history = model.fit(normalised(images), targets, batch_size=args.batch_size,
                        epochs=args.epochs, verbose=2)
    return history.history["loss"], time.perf_counter() - start


def segmentation(args, train, held_out):
    import keras
    import numpy as np

    from digit_tasks.canvases import mean_iou
    from digit_tasks.models import deeplab_v3_segmenter, normalised

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


def detection(args, train, held_out):
    import keras
    import numpy as np

    from digit_tasks.canvases import NUM_DIGITS, average_precision, detection_scores
    from digit_tasks.models import normalised, retinanet_detector

    if args.one_class:  # every digit is class 0; padding stays -1
        train, held_out = (replace(canvases, labels=np.minimum(canvases.labels, 0))
                           for canvases in (train, held_out))
    detector = retinanet_detector(args.model, args.size,
                                  num_classes=1 if args.one_class else NUM_DIGITS)
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

    from digit_tasks.canvases import make_canvases

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
