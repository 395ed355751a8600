"""`keras-resnest train`: fine-tune or train a ResNeSt on a folder, TFRecords or the digits.

Examples:
    keras-resnest train --model resnest14d --dataset digits --epochs 8 --batch-size 32 \\
        -o runs/digits
    keras-resnest train --model resnest50 --weights imagenet --data photos/ --epochs 10 \\
        --batch-size 32 --freeze-backbone -o runs/photos
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
               "task": {"type": "worker", "index": 0}}' \\
        keras-resnest train --model resnest50 --tfrecord 'shards/train-*' \\
        --strategy multiworker ... -o runs/x

A killed run restarted with the same command resumes where it stopped (see RUN_DIR/backup);
options its checkpoint cannot take (another model, classes, data, optimizer, EMA on/off, ...)
stop the command with one line instead (RUN_DIR/train_config.json records the run).
"""

import argparse
import contextlib
import sys

from keras_resnest.training.config import (
    DATASETS,
    MIN_AREA,
    OPTIMIZERS,
    PRECISIONS,
    AugmentConfig,
    TrainConfig,
)
from keras_resnest.training.strategy import STRATEGIES

# `--weights none` means random weights, as for predict and export (model_source.NO_WEIGHTS;
# not imported from there, which would import Keras before the arguments parse).
NO_WEIGHTS = ("none", "random")


def weights_argument(value):
    return None if value.lower() in NO_WEIGHTS else value
# The digits are 8x8 scans upsampled: small crops would cut digits in half and flips change
# their meaning, so their augmentation is milder unless the user says otherwise.
DIGITS_DEFAULTS = {"image_size": 32, "min_crop_area": 0.5, "flip": False}


def register(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a ResNeSt (tf.distribute, resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="model name, e.g. resnest14d, resnest50")
    parser.add_argument(
        "--weights",
        default=None,
        type=weights_argument,
        help="backbone weights: imagenet, none (random init, the default), a file or "
        "hf://<owner>/<name>[@revision]",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", metavar="DIR", help="DIR/train/<class>/*, optional DIR/val/<class>/*"
    )
    source.add_argument(
        "--tfrecord", metavar="GLOB", help="TFRecord shards (image/encoded, image/class/label)"
    )
    source.add_argument("--dataset", choices=DATASETS, help="embedded dataset (no download)")
    parser.add_argument("--val-tfrecord", metavar="GLOB", help="validation shards for --tfrecord")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="seeded hold-out when there is no val/ (0.1)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="per replica; global = this x replicas (32)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="training/eval size in px (224; digits: 32)"
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="auto: multiworker with TF_CONFIG, else mirrored over GPUs, else none",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        metavar="N",
        help="split the CPU into N logical devices and train on them under MirroredStrategy "
        "(with --strategy auto or mirrored, on a machine without GPUs)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default=TrainConfig.precision)
    parser.add_argument(
        "--freeze-backbone", action="store_true", help="train only the new head at first"
    )
    parser.add_argument(
        "--unfreeze-epoch",
        type=int,
        default=None,
        help="epoch that unfreezes the backbone (epochs/2)",
    )
    recipe_group = parser.add_argument_group("recipe")
    recipe_group.add_argument("--optimizer", choices=OPTIMIZERS, default=TrainConfig.optimizer)
    recipe_group.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (0.1 x global batch / 256)"
    )
    recipe_group.add_argument("--warmup-epochs", type=float, default=5.0)
    recipe_group.add_argument(
        "--weight-decay", type=float, default=None, help="1e-4 (sgd), 0.05 (adamw)"
    )
    recipe_group.add_argument("--momentum", type=float, default=0.9)
    recipe_group.add_argument("--label-smoothing", type=float, default=0.1)
    recipe_group.add_argument(
        "--ema", type=float, default=None, metavar="MOMENTUM", help="EMA of weights, e.g. 0.9999"
    )
    recipe_group.add_argument(
        "--last-gamma",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="zero-init each block's last BN gamma (default: on without --weights)",
    )
    recipe_group.add_argument(
        "--drop-rate", type=float, default=0.0, help="dropout before the head"
    )
    recipe_group.add_argument("--drop-path-rate", type=float, default=0.0)
    recipe_group.add_argument("--dropblock-rate", type=float, default=0.0)
    aug = parser.add_argument_group("augmentation")
    aug.add_argument(
        "--min-crop-area", type=float, default=None, help="random resized crop area floor (0.1)"
    )
    aug.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flip"
    )
    aug.add_argument(
        "--randaugment", action="store_true", help="Keras RandAugment (AutoAugment's substitute)"
    )
    aug.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA")
    aug.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--seed", type=int, default=0)
    run_group.add_argument(
        "--deterministic", action="store_true", help="seeded, deterministic ops and input order"
    )
    run_group.add_argument(
        "--jit-compile", action="store_true",
        help="compile the train step with XLA (for GPUs; docs/fine-tuning.md)",
    )
    run_group.add_argument(
        "--steps-per-epoch", type=int, default=None, help="default: one pass over the images"
    )
    run_group.add_argument(
        "--checkpoint-every", type=int, default=50, help="steps between backups (50)"
    )
    qat_group = parser.add_argument_group("quantization-aware training (int8 TFLite)")
    qat_group.add_argument(
        "--qat-epochs",
        type=int,
        default=0,
        metavar="N",
        help="QAT epochs after the float ones, written to RUN_DIR/qat/ (with --epochs 0: "
        "from --weights FILE.keras); its int8 export needs no calibration",
    )
    qat_group.add_argument(
        "--qat-lr",
        type=float,
        default=None,
        help="QAT peak learning rate (a tenth of --lr's default)",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="RUN_DIR", help="checkpoints, logs and the model"
    )


def strategy_name(requested, cpu_devices, workers):
    """The strategy to make: `requested`, except that `auto` with `--cpu-devices N` (N > 1) on
    one machine is `mirrored`: splitting the CPU asks for replicas, and `auto` alone picks one
    device when there is no GPU (with GPUs, `mirrored` uses them, as `auto` would)."""
    if requested == "auto" and cpu_devices and cpu_devices > 1 and workers <= 1:
        return "mirrored"
    return requested


def config_from_args(args):
    """`TrainConfig` from parsed arguments (digits defaults applied where not given)."""
    digits = args.dataset == "digits"
    defaults = (
        DIGITS_DEFAULTS if digits else {"image_size": 224, "min_crop_area": MIN_AREA, "flip": True}
    )

    def pick(name):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    return TrainConfig(
        model_name=args.model,
        weights=args.weights,
        image_size=pick("image_size"),
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        label_smoothing=args.label_smoothing,
        ema_momentum=args.ema,
        last_gamma=args.last_gamma,
        drop_rate=args.drop_rate,
        drop_path_rate=args.drop_path_rate,
        dropblock_rate=args.dropblock_rate,
        freeze_backbone=args.freeze_backbone,
        unfreeze_epoch=args.unfreeze_epoch,
        precision=args.precision,
        augment=AugmentConfig(
            min_area=pick("min_crop_area"),
            flip=pick("flip"),
            randaugment=args.randaugment,
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
        ),
        seed=args.seed,
        deterministic=args.deterministic,
        steps_per_epoch=args.steps_per_epoch,
        checkpoint_every=args.checkpoint_every,
        qat_epochs=args.qat_epochs,
        qat_learning_rate=args.qat_lr,
        jit_compile=args.jit_compile,
    )


def load_data(args, image_size):
    from keras_resnest.training import data

    if args.dataset == "digits":
        return data.digits_data(image_size)
    if args.data:
        return data.folder_data(args.data, val_fraction=args.val_fraction, seed=args.seed)
    return data.tfrecord_data(
        args.tfrecord, args.val_tfrecord, val_fraction=args.val_fraction, seed=args.seed
    )


def run(args, callbacks=()):
    """Runs `keras-resnest train` for parsed `args`; `callbacks` go to `loop.train`."""
    from keras_resnest.training import run_record

    # The registry's names and aliases (resnest50d), canonical from here on (logs, configs), as
    # train() makes them for its Python callers.
    config = config_from_args(args).resolved()
    if args.val_tfrecord and not args.tfrecord:
        raise ValueError("--val-tfrecord needs --tfrecord.")
    # Fail before work: the checks that need neither TensorFlow devices nor the data come first;
    # train() checks the rest (classes, batch, validation split) before it builds the model.
    config.validate()
    # Importing runs no TensorFlow op, so the device layout below can still be set.
    from keras_resnest.training.loop import train
    from keras_resnest.training.run import check_output_dir

    check_output_dir(args.output)
    # A folder of another run stops here, before the data is read; train() compares the
    # classes once it has them.
    source = run_record.data_source(
        dataset=args.dataset, folder=args.data, tfrecord=args.tfrecord,
        val_tfrecord=args.val_tfrecord,
    )
    run_record.check_resume(args.output, config, source)
    # Device layout and the strategy come first: both must exist before any other TF op.
    from keras_resnest.training import strategy as strategy_lib

    if args.cpu_devices:
        strategy_lib.split_cpu(args.cpu_devices)
    strategy = strategy_lib.make_strategy(
        strategy_name(args.strategy, args.cpu_devices, strategy_lib.tf_config_workers()))
    data = load_data(args, config.image_size)
    from keras_resnest.quiet_start import filtered_stderr
    from keras_resnest.training import data as data_lib
    from keras_resnest.training.run import PeerLostError

    # libjpeg writes to descriptor 2 from tf.data's threads on every pass over a bad file: keep
    # it out and print each file's own warning (data.UNDECODABLE) once; --verbose shows it all.
    stderr_filter = contextlib.nullcontext()
    if not getattr(args, "verbose", False):
        stderr_filter = filtered_stderr(once=(data_lib.UNDECODABLE,))
    try:
        with stderr_filter:
            result = train(config, data, args.output, strategy, callbacks=callbacks)
    except PeerLostError as error:  # one line, not the collective ops' trace
        print(f"keras-resnest train: error: {error}", file=sys.stderr)
        return 1
    evaluation = result.get("evaluation")
    if evaluation is not None:
        print(f"top1 {evaluation['top1']:.4f} top5 {evaluation['top5']:.4f} -> {args.output}")
    return 0


def main(argv=None):
    """`python -m keras_resnest.training ARGS` == `keras-resnest train ARGS`."""
    from keras_resnest.commands.main import main as cli_main

    return cli_main(["train", *(argv if argv is not None else __import__("sys").argv[1:])])
