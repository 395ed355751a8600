"""`make demo` (`keras_resnest_cli.demo()`, which keeps TensorFlow's start-up lines hidden; also
`python -m keras_resnest.demo`): the end-to-end job on the embedded digits.

Trains resnest14d on scikit-learn's handwritten digits (1,797 real 8x8 scans, upsampled to
32 px RGB; no download) under MirroredStrategy over the local devices (all GPUs, or the CPU
split into two logical devices), evaluates it, saves it, and prints a short results table.
It starts from random weights, because the demo must run offline; the same command with
`--weights imagenet` fine-tunes pretrained weights.

Then it exports the trained model as a TF-Serving package and as a full-integer (int8)
TFLite file calibrated on training images, and reports int8 vs Keras on the validation images.

Outputs (default `demo_output/`): `run/` (model.keras, class_names.json, evaluation.json,
history.csv, TensorBoard logs, checkpoints), `serving/digits/1/` (+ models.config,
batching.config), `digits_int8.tflite`.
"""
import argparse
import os
import shutil
import sys
import time

from keras_resnest.quiet_start import import_tensorflow_quietly

DEMO_MODEL = "resnest14d"
DEMO_IMAGE_SIZE = 32
DEMO_EPOCHS = 6
DEMO_BATCH_PER_REPLICA = 32


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m keras_resnest.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="demo_output", help="output folder (replaced)")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    parser.add_argument(
        "--weights", default=None, help="backbone weights: imagenet or a file (default: none)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's start-up and C++ log lines"
    )
    return parser.parse_args(argv)


def _table(rows):
    width = max(len(key) for key, _ in rows)
    lines = ["", "keras-resnest demo results", "-" * (width + 40)]
    lines += [f"{key:<{width}}  {value}" for key, value in rows]
    lines.append("-" * (width + 40))
    return "\n".join(lines)


def _export(model_path, output):
    """TF-Serving package and int8 TFLite of the trained model, with the int8 report."""
    import keras

    from keras_resnest.export import convert_to_tflite, export_serving_package, tflite_report
    from keras_resnest.export.output_paths import write_file_atomically
    from keras_resnest.training.digits import load_digits_dataset

    model = keras.saving.load_model(model_path)
    split = load_digits_dataset(DEMO_IMAGE_SIZE)
    serving_dir = os.path.join(output, "serving")
    version_dir = export_serving_package(
        model,
        serving_dir,
        "digits",
        version=1,
        image_size=DEMO_IMAGE_SIZE,
        labels=split.class_names,
        overwrite=True,
    )
    # Calibrate on training images, report on the held-out validation images.
    flatbuffer = convert_to_tflite(
        model,
        "int8",
        image_size=DEMO_IMAGE_SIZE,
        calibration_data=split.train_images.astype("float32"),
        num_calibration=200,
    )
    tflite_path = write_file_atomically(os.path.join(output, "digits_int8.tflite"), flatbuffer)
    report = tflite_report(flatbuffer, model, split.val_images.astype("float32"))
    return [
        ("TF-Serving package", str(version_dir)),
        ("TFLite int8", f"{tflite_path} ({report['size_bytes'] / 2**20:.2f} MiB)"),
        (
            "int8 vs Keras",
            f"top-1 agreement {100 * report['top1_agreement']:.2f}% on "
            f"{report['num_images']} validation images, "
            f"{report['latency_ms_median']:.2f} ms/image (XNNPACK, 2 threads)",
        ),
    ]


def main(argv=None):
    args = _parse(argv)
    started = time.perf_counter()
    import_tensorflow_quietly(verbose=args.verbose)
    # Devices and the strategy first: logical devices cannot be added once TensorFlow runs.
    import tensorflow as tf

    from keras_resnest.training import strategy as strategy_lib

    if not tf.config.list_physical_devices("GPU"):
        strategy_lib.split_cpu(2)
    strategy = strategy_lib.make_strategy("mirrored")

    from keras_resnest.training.augment import AugmentConfig
    from keras_resnest.training.data import digits_data
    from keras_resnest.training.loop import TrainConfig, train

    run_dir = os.path.join(args.output, "run")
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)  # a demo starts fresh instead of resuming an old run
    config = TrainConfig(
        model_name=DEMO_MODEL,
        weights=args.weights,
        image_size=DEMO_IMAGE_SIZE,
        epochs=args.epochs,
        batch_size=DEMO_BATCH_PER_REPLICA,
        warmup_epochs=1,
        augment=AugmentConfig(min_area=0.5, flip=False),  # digits: no flips, no tiny crops
    )
    result = train(config, digits_data(DEMO_IMAGE_SIZE), run_dir, strategy)
    evaluation = result["evaluation"]
    train_seconds = sum(row["seconds"] for row in result["history"])
    rows = [
        (
            "model",
            f"{DEMO_MODEL} ({'weights ' + args.weights if args.weights else 'random init'}), "
            f"{DEMO_IMAGE_SIZE} px",
        ),
        ("data", "scikit-learn digits: 1437 train / 360 validation images, 10 classes"),
        (
            "strategy",
            f"MirroredStrategy, {result['replicas']} replicas "
            f"({', '.join(d.split('device:')[-1] for d in strategy.extended.worker_devices)})",
        ),
        ("global batch", f"{result['global_batch_size']} ({DEMO_BATCH_PER_REPLICA} per replica)"),
        ("epochs x steps", f"{config.epochs} x {result['steps_per_epoch']}"),
        (
            "training time",
            f"{train_seconds:.1f} s ({result['train_images_per_second']:.0f} images/s)",
        ),
        ("validation top-1", f"{evaluation['top1']:.4f}"),
        ("validation top-5", f"{evaluation['top5']:.4f}"),
        ("saved", f"{os.path.join(run_dir, 'model.keras')}, class_names.json, evaluation.json"),
    ]

    rows += _export(os.path.join(run_dir, "model.keras"), args.output)

    rows.append(("wall time", f"{time.perf_counter() - started:.1f} s"))
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
