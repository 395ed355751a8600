"""Float vs post-training int8 vs quantization-aware int8, on the held-out digits.

Why: post-training int8 of the digits demo already agrees with float on 99.7% of held-out
images, so QAT's value shows only where post-training quantization (PTQ) hurts. This script
trains the float model to convergence (12 epochs, no flips: digits are not mirror-symmetric),
quantizes it post-training with as little as it can (default 1 calibration image, uniform noise:
the placeholder representative dataset of many conversion examples, i.e. an unrepresentative
calibration; per-channel and per-tensor weights, the latter what integer-only accelerators
without per-channel support get), then runs one QAT epoch at a small learning rate from the
float weights (BatchNorm statistics frozen; `keras_resnest.export.quantize_aware`, the
`--qat-epochs` phase of the training loop) and exports it with its learned ranges (no
calibration images). It prints the accuracy of each on the 360 held-out images and its top-1
agreement with the float model.

    python -m benchmarks.qat_report                      # ~12 minutes on 2 CPU cores
    python -m benchmarks.qat_report --calibration-source train   # calibrate on training digits
    python -m benchmarks.qat_report --epochs 20 --qat-epochs 4 --model resnest26d   # longer
    python -m benchmarks.qat_report -o RUN ...; python -m benchmarks.qat_report \
        --float-model RUN/model.keras --qat-model RUN/qat/model.keras --calibration-images 10
        # no training, ~50 s (also for the models of `keras-resnest train --qat-epochs`)

Measured with the defaults (resnest14d, 32 px, 12 float epochs + 1 QAT epoch at lr 1e-4, 721 s
on 2 cores shared with a test run for about 7 of those minutes):

| model | accuracy | top-1 agreement with float |
|---|---|---|
| float32 (Keras) | 99.4% | 100.0% |
| post-training int8 (1 random-noise calibration image, per-channel weights) | 98.3% | 98.6% |
| post-training int8 (1 random-noise calibration image, per-tensor weights) | 98.1% | 98.3% |
| QAT int8 (1 QAT epoch at lr 0.0001, per-channel weights, no calibration images) | 99.4% | 100.0% |

QAT recovers 100% of the accuracy (1.1 / 1.4 points) and of the top-1 agreement (1.4 / 1.7
points) post-training int8 loses, per-channel / per-tensor. The same two models with `--calibration-source train` (one training digit): post-training int8 99.4%
/ 100.0%, per-channel and per-tensor; nothing lost, nothing to recover.

Every setting tried (360 held-out images; "agr." = top-1 agreement with float; PTQ = post-training
int8 with N calibration images, per-channel / per-tensor weights; QAT exported per-channel):

| model, px | float epochs | calibration | PTQ per-channel acc / agr. | PTQ per-tensor acc / agr. | QAT epochs, lr | QAT acc / agr. | float acc | wall |
|---|---|---|---|---|---|---|---|---|
| resnest14d, 32 | 12 | 1 train image | 99.4 / 100.0 | 99.4 / 100.0 | 1, 1e-4 | 99.4 / 100.0 | 99.4 | 783 s |
| resnest14d, 32 | 12 | 1 noise image | 98.3 / 98.6 | 98.1 / 98.3 | 1, 1e-4 | 99.4 / 100.0 | 99.4 | 797 s |
| resnest14d, 32 | 12 (same model) | 10 noise images | 98.6 / 98.9 | 98.9 / 99.2 | - | - | 99.4 | 30 s |
| resnest14d, 32 | 12 (same model) | 100 noise images | 98.9 / 99.2 | 98.9 / 99.2 | - | - | 99.4 | 31 s |
| resnest14d, 32 | 12 (same model) | train image 1 / 2 | 99.4 / 100.0 | 99.4 / 100.0 | - | - | 99.4 | 30 s |
| resnest14d, 32 | 6, under-trained (*) | 1 train image | 89.4 / 95.0 | 88.3 / 95.6 | 1, 1e-5 | 93.6 / 96.4 | 90.3 | 140 s |
| resnest14d, 32 | 6, under-trained (*) | 1 train image | 89.4 / 95.0 | 88.3 / 95.6 | 1, 1e-9 | 91.9 / 98.1 | 90.3 | 100 s |
| resnest50_fast_4s2x40d, 32 | 8 | 1 train image | 98.1 / 99.4 | 98.3 / 99.7 | 1, 1e-5 | export failed (**) | 98.6 | 747 s + 412 s |
| resnest50_fast_4s2x40d, 32 | 8 | 1 noise image | 98.1 / 98.9 | 97.8 / 98.6 | 1, 1e-5 | 98.9 / 99.7 | 98.6 | 1059 s |
| resnest50, 32 | 8 | 1 train image | 99.2 / 99.7 | 99.2 / 99.7 | 1, 1e-5 | 99.2 / 99.7 | 99.4 | 1132 s |
| resnest50, 32 | 8 (same model) | 1 noise image | 99.2 / 99.7 | 98.9 / 99.4 | (QAT row above) | 99.2 / 99.7 | 99.4 | 72 s |

(*) the float model of an earlier run of this branch (6 epochs, 5 warmup epochs, flips, crops of
10% area and more), given with --float-model. Such a model is fragile: even QAT at lr 1e-9 (only
the ranges learn) disagrees with it on 1.9% of the images, and any real QAT learning rate keeps
improving it away from float: neither QAT run reached 99.5% agreement with it.
(**) before the fix in `QatSplitAttention._global_pool`: the converter drops the mean over a
1x1 map (layer4 at 32 px) and the two ranges around it broke the split of the grouped fc1
(`'tfl.split' op quantization parameters violate the same scale constraint`);
tests/test_qat.py has that case. The row below it is the same setting after the fix, with noise
calibration: QAT recovers 75-80% of the agreement and all of the accuracy post-training int8
loses, and agrees 99.7% (radix 4, cardinality 2).

With representative calibration, post-training int8 of a converged model loses at most two images
here (0.6% agreement), even with one calibration image, per-tensor weights, radix 4 or 16 blocks,
so there is nothing measurable for QAT to recover; the loss appears with an unrepresentative
calibration (noise), which QAT, needing no calibration images, avoids entirely.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPOCHS = 12
QAT_EPOCHS = 1
QAT_LR = 1e-4
CALIBRATION_IMAGES = 1
# Digits are not mirror-symmetric: no flips, and crops that keep at least half of the digit.
AUGMENT = dict(min_area=0.5, flip=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnest14d")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"float epochs ({EPOCHS})")
    parser.add_argument(
        "--qat-epochs",
        type=int,
        default=QAT_EPOCHS,
        help=f"QAT epochs ({QAT_EPOCHS}; 0: post-training rows only)",
    )
    parser.add_argument(
        "--qat-lr",
        type=float,
        default=QAT_LR,
        help=f"peak learning rate of the QAT phase (SGD, {QAT_LR:g})",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=CALIBRATION_IMAGES,
        help=f"training images that calibrate post-training int8 ({CALIBRATION_IMAGES})",
    )
    parser.add_argument(
        "--calibration-start",
        type=int,
        default=0,
        help="index of the first training image that calibrates (0)",
    )
    parser.add_argument(
        "--calibration-source",
        choices=("noise", "train"),
        default="noise",
        help="noise (default): uniform random 0..255 images, the placeholder "
        "representative dataset of many conversion examples (an "
        "unrepresentative calibration); train: training images",
    )
    parser.add_argument(
        "--float-model",
        default=None,
        metavar="FILE.keras",
        help="a trained float classifier (e.g. RUN_DIR/model.keras of an earlier -o run): "
        "no float training, --epochs is ignored",
    )
    parser.add_argument(
        "--qat-model",
        default=None,
        metavar="FILE.keras",
        help="a QAT model trained elsewhere (RUN_DIR/qat/model.keras of `keras-resnest "
        "train --qat-epochs`) to compare with --float-model: no training at all",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="training steps per epoch (default: one pass over the images)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "-o", "--output", default=None, help="run directory (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "calibration_images", "batch_size", "qat_lr"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.qat_epochs < 0:
        parser.error("--qat-epochs must be >= 0")
    for name in ("float_model", "qat_model"):
        path = getattr(args, name)
        if path is not None and not (path.endswith(".keras") and os.path.isfile(path)):
            parser.error(f"--{name.replace('_', '-')} must be an existing .keras file, got {path}")
    if args.qat_model is not None and args.float_model is None:
        parser.error("--qat-model needs --float-model (the float model it was trained from)")
    if args.steps_per_epoch is not None and args.steps_per_epoch < 1:
        parser.error("--steps-per-epoch must be >= 1")
    if args.qat_model is not None:
        args.qat_epochs = 0  # nothing to train: the QAT row comes from the file
    if args.float_model is not None and args.qat_epochs == 0:
        args.epochs = 0  # nothing to train
    if args.float_model is None and args.epochs == 0:
        parser.error("--epochs must be > 0")
    return args


def post_training_int8(model, calibration_images, per_channel):
    """Full-integer int8 calibrated on `calibration_images` (uint8 I/O, as the QAT export)."""
    import tensorflow as tf

    from keras_resnest.export import tflite

    with tempfile.TemporaryDirectory() as scratch:
        tflite.write_conversion_saved_model(model, Path(scratch) / "sm", model.input_shape[1])
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(scratch) / "sm"))
        tflite.configure_converter(converter, "int8", calibration_images)
        converter._experimental_disable_per_channel = not per_channel  # no public switch
        flatbuffer = converter.convert()
    tflite.check_builtin_ops(flatbuffer)
    return flatbuffer


def tflite_classes(flatbuffer, images):
    from keras_resnest.export.report import TFLiteClassifier

    runner = TFLiteClassifier(flatbuffer)
    return np.array([int(np.argmax(runner(image)["logits"])) for image in images])


def main(argv=None):
    args = parse_args(argv)
    from keras_resnest.export.tflite import convert_to_tflite
    from keras_resnest.training.augment import AugmentConfig
    from keras_resnest.training.data import digits_data
    from keras_resnest.training.digits import load_digits_dataset
    from keras_resnest.training.loop import TrainConfig, train

    started = time.perf_counter()
    run_dir = args.output or tempfile.mkdtemp(prefix="qat_report_")
    float_epochs = 0 if args.float_model else args.epochs
    qat_model = None
    if float_epochs or args.qat_epochs:
        config = TrainConfig(
            model_name=args.model,
            image_size=args.image_size,
            epochs=float_epochs,
            batch_size=args.batch_size,
            warmup_epochs=1,
            qat_epochs=args.qat_epochs,
            qat_learning_rate=args.qat_lr,
            augment=AugmentConfig(**AUGMENT),
            seed=args.seed,
            deterministic=True,
            weights=args.float_model,
            steps_per_epoch=args.steps_per_epoch,
        )
        result = train(config, digits_data(args.image_size), run_dir, log=lambda *a, **k: None)
        qat_model = result["model"] if args.qat_epochs else None
    import keras_resnest

    float_path = args.float_model or os.path.join(run_dir, "model.keras")
    float_model = keras_resnest.load_model(float_path, compile=False)
    split = load_digits_dataset(args.image_size)
    images = split.val_images.astype(np.float32)
    labels = split.val_labels
    float_classes = np.argmax(float_model.predict(images, batch_size=64, verbose=0), -1)
    if args.calibration_source == "noise":
        calibration = (
            np.random.default_rng(args.seed)
            .uniform(0, 255, (args.calibration_images,) + split.train_images.shape[1:])
            .astype(np.float32)
        )
    else:
        first = args.calibration_start
        calibration = split.train_images[first : first + args.calibration_images].astype(np.float32)
    ptq = {
        per_channel: tflite_classes(
            post_training_int8(float_model, calibration, per_channel), images
        )
        for per_channel in (True, False)
    }
    if args.qat_model:
        qat_model = keras_resnest.load_model(args.qat_model, compile=False)
    qat = tflite_classes(convert_to_tflite(qat_model, "int8"), images) if qat_model else None

    plural = "s" * (args.calibration_images > 1)
    calibrated = f"{args.calibration_images} calibration image{plural}"
    if args.calibration_source == "noise":
        calibrated = f"{args.calibration_images} random-noise calibration image{plural}"
    elif args.calibration_start:
        calibrated += f" from training image {args.calibration_start}"
    qat_training = (
        f"QAT model {args.qat_model}"
        if args.qat_model
        else f"{args.qat_epochs} QAT epoch{'s' * (args.qat_epochs > 1)} at lr {args.qat_lr:g}"
    )
    rows = [
        ("float32 (Keras)", float_classes),
        (f"post-training int8 ({calibrated}, per-channel weights)", ptq[True]),
        (f"post-training int8 ({calibrated}, per-tensor weights)", ptq[False]),
        (f"QAT int8 ({qat_training}, per-channel weights, no calibration images)", qat),
    ][: 4 if qat_model else 3]
    source = (
        f"float model {args.float_model}" if args.float_model else f"{args.epochs} float epochs"
    )
    print(
        f"{args.model} {args.image_size} px, {source}, digits: "
        f"{len(labels)} held-out images ({time.perf_counter() - started:.0f} s)"
    )
    print("| model | accuracy | top-1 agreement with float |")
    print("|---|---|---|")
    for name, classes in rows:
        accuracy, agreement = np.mean(classes == labels), np.mean(classes == float_classes)
        print(f"| {name} | {accuracy:.1%} | {agreement:.1%} |")
    for per_channel, classes in ptq.items():
        if qat is None:
            break
        lost = np.mean(float_classes == labels) - np.mean(classes == labels)
        recovered = np.mean(qat == labels) - np.mean(classes == labels)
        weights = "per-channel" if per_channel else "per-tensor"
        if lost > 0:
            print(
                f"QAT recovers {recovered / lost:.0%} of the {lost:.1%} accuracy post-training "
                f"int8 ({weights}) loses"
            )
        else:
            print(f"post-training int8 ({weights}) lost no accuracy in this setting")
        disagree = 1.0 - np.mean(classes == float_classes)
        if disagree > 0:
            regained = np.mean(qat == float_classes) - np.mean(classes == float_classes)
            print(
                f"QAT recovers {regained / disagree:.0%} of the {disagree:.1%} top-1 agreement "
                f"post-training int8 ({weights}) loses"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
