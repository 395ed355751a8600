"""`make demo` (`keras_resnest_cli.demo()`, which keeps TensorFlow's start-up lines hidden; also
`python -m keras_resnest.commands.demo`): the end-to-end job on the embedded digits.

Trains resnest14d on scikit-learn's handwritten digits (1,797 real 8x8 scans, upsampled to
32 px RGB; no download) for three short epochs (on one device, about half the training images
each), evaluates it, saves it, and prints a short results table with the time of each phase.
It trains on one device on a machine without a GPU (MirroredStrategy over logical CPU devices
would only add copying and synchronisation on the same cores), under MirroredStrategy over all
GPUs when there are any, and under MirroredStrategy over the CPU split into `--cpu-devices`
logical devices (2 unless given) with `--strategy mirrored`; its first line says which and why.
It starts from random weights, because the demo must run offline; the same command with
`--weights imagenet` fine-tunes pretrained weights.

Then it exports the trained model as a TF-Serving package and as a full-integer (int8)
TFLite file calibrated on training images, and reports int8 vs Keras on the validation images.

Outputs (default `demo_output/`): `run/` (model.keras, class_names.json, evaluation.json,
history.csv, TensorBoard logs, checkpoints), `serving/digits/1/` (+ models.config,
batching.config), `digits_int8.tflite`.
"""
import argparse
import contextlib
import os
import shutil
import sys
import time

from keras_resnest.quiet_start import TFLITE_CHATTER, filtered_stderr, import_tensorflow_quietly

DEMO_MODEL = "resnest14d"
DEMO_IMAGE_SIZE = 32
DEMO_EPOCHS = 3
# About half the training images per epoch on one device: three short epochs learn the digits
# and show the learning curve, and a newcomer's first run takes minutes.
DEMO_STEPS_PER_EPOCH = 22
DEMO_BATCH_PER_REPLICA = 32
# Base of the linear scaling rule (peak = base x global batch / 256): twice the recipe's SGD
# base, for a run this short.
DEMO_BASE_LEARNING_RATE = 0.2
DEMO_CPU_DEVICES = 2  # logical CPU devices of `--strategy mirrored` on a machine without a GPU


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m keras_resnest.commands.demo",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="demo_output", help="output folder (replaced)")
    parser.add_argument(
        "--epochs", type=int, default=DEMO_EPOCHS, help=f"short epochs ({DEMO_EPOCHS})"
    )
    parser.add_argument(
        "--weights", default=None, help="backbone weights: imagenet or a file (default: none)"
    )
    parser.add_argument(
        "--strategy",
        choices=("auto", "mirrored", "none"),
        default="auto",
        help="auto: mirrored over the GPUs when there are any, else one device (auto)",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        metavar="N",
        help=f"logical CPU devices of --strategy mirrored without GPUs ({DEMO_CPU_DEVICES})",
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


def _make_strategy(name, cpu_devices):
    """The strategy for `--strategy NAME` (training/strategy.py's choice) and the line saying
    which devices it uses and why; runs before any TensorFlow op (the CPU split needs that)."""
    import tensorflow as tf

    from keras_resnest.training import strategy as strategy_lib

    gpus = tf.config.list_physical_devices("GPU")
    if cpu_devices or (name == "mirrored" and not gpus):
        strategy_lib.split_cpu(cpu_devices or DEMO_CPU_DEVICES)
    strategy = strategy_lib.make_strategy(name)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return strategy, "MultiWorkerMirroredStrategy: TF_CONFIG names several workers"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        devices = [device.split("device:")[-1] for device in strategy.extended.worker_devices]
        why = "GPUs found" if name == "auto" else "--strategy mirrored"
        replicas = f"{len(devices)} replica{'s' if len(devices) > 1 else ''}"
        return strategy, f"MirroredStrategy, {replicas} ({', '.join(devices)}): {why}"
    device = "GPU:0" if gpus else "CPU"
    if name == "none":
        return strategy, f"one device ({device}): --strategy none"
    hint = "--strategy mirrored for MirroredStrategy"
    return strategy, f"one device ({device}, no GPU found): {hint}"


def _export(model_path, output, phases):
    """TF-Serving package and int8 TFLite of the trained model, with the int8 report."""
    import keras

    from keras_resnest.export import convert_to_tflite, export_serving_package, tflite_report
    from keras_resnest.export.output_paths import write_file_atomically
    from keras_resnest.training.digits import load_digits_dataset

    started = time.perf_counter()
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
    started = _phase(phases, "TF-Serving", started)
    # Calibrate on training images, report on the held-out validation images.
    flatbuffer = convert_to_tflite(
        model,
        "int8",
        image_size=DEMO_IMAGE_SIZE,
        calibration_data=split.train_images.astype("float32"),
        num_calibration=200,
    )
    tflite_path = write_file_atomically(os.path.join(output, "digits_int8.tflite"), flatbuffer)
    started = _phase(phases, "TFLite int8", started)
    report = tflite_report(flatbuffer, model, split.val_images.astype("float32"))
    _phase(phases, "int8 report", started)
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


def _phase(phases, name, started):
    """Appends (name, seconds since `started`) to `phases`; returns the time now."""
    now = time.perf_counter()
    phases.append((name, now - started))
    return now


def main(argv=None):
    args = _parse(argv)
    started = time.perf_counter()
    import_tensorflow_quietly(verbose=args.verbose)
    # Devices and the strategy first: logical devices cannot be added once TensorFlow runs.
    strategy, strategy_line = _make_strategy(args.strategy, args.cpu_devices)
    print(f"keras-resnest demo: {strategy_line}", flush=True)
    phases = []
    phase_started = _phase(phases, "start-up", started)
    # The TFLite converter and interpreter write lines to descriptor 2 from C++ that say
    # nothing to a newcomer; --verbose shows them.
    with contextlib.nullcontext() if args.verbose else filtered_stderr(drop=TFLITE_CHATTER):
        rows = _run(args, strategy, strategy_line, phases, phase_started)
    rows.append(("wall time", f"{time.perf_counter() - started:.1f} s"))
    rows.append(("phases", ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)))
    print(_table(rows))
    return 0


def _run(args, strategy, strategy_line, phases, started):
    """Trains, evaluates, saves and exports; returns the rows of the results table."""
    from keras_resnest.training import recipe
    from keras_resnest.training.augment import AugmentConfig
    from keras_resnest.training.data import digits_data
    from keras_resnest.training.loop import TrainConfig, train

    run_dir = os.path.join(args.output, "run")
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)  # a demo starts fresh instead of resuming an old run
    global_batch = DEMO_BATCH_PER_REPLICA * strategy.num_replicas_in_sync
    config = TrainConfig(
        model_name=DEMO_MODEL,
        weights=args.weights,
        image_size=DEMO_IMAGE_SIZE,
        epochs=args.epochs,
        batch_size=DEMO_BATCH_PER_REPLICA,
        steps_per_epoch=DEMO_STEPS_PER_EPOCH,
        learning_rate=recipe.scaled_learning_rate("sgd", global_batch, DEMO_BASE_LEARNING_RATE),
        warmup_epochs=1,
        augment=AugmentConfig(min_area=0.5, flip=False),  # digits: no flips, no tiny crops
    )
    result = train(config, digits_data(DEMO_IMAGE_SIZE), run_dir, strategy)
    started = _phase(phases, "train+evaluate+save", started)
    evaluation = result["evaluation"]
    train_seconds = sum(row["seconds"] for row in result["history"])
    rows = [
        (
            "model",
            f"{DEMO_MODEL} ({'weights ' + args.weights if args.weights else 'random init'}), "
            f"{DEMO_IMAGE_SIZE} px",
        ),
        ("data", "scikit-learn digits: 1437 train / 360 validation images, 10 classes"),
        ("strategy", strategy_line),
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
    return rows + _export(os.path.join(run_dir, "model.keras"), args.output, phases)


if __name__ == "__main__":
    sys.exit(main())
