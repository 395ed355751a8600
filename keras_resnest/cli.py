"""The `keras-resnest` command.

Each feature area owns its subcommands in its own module (a `register(subparsers)` function);
this file only assembles them, so `keras-resnest --help` stays fast (TensorFlow is imported by
the handlers; the console script is `keras_resnest_cli`, which keeps `import keras_resnest` from
importing Keras). Once the arguments parse, TensorFlow is imported with its C++ start-up lines
hidden unless `--verbose` is given (`keras_resnest.quiet_start`), then Keras and the package's
classes (`keras_resnest.import_api`).
"""
import argparse
import importlib
import sys

from keras_resnest.quiet_start import import_tensorflow_quietly

COMMAND_MODULES = (
    "keras_resnest.convert_cli",
    "keras_resnest.predict_cli",
    "keras_resnest.predict_batch_cli",
    "keras_resnest.export.cli",
    "keras_resnest.training.cli",
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-resnest",
        description="ResNeSt for Keras 3: convert weights, predict, train and export.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for command in subparsers.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="show TensorFlow's start-up and C++ log lines")
    return parser


def main(argv=None):
    parser = build_parser()
    args, extra_options = parser.parse_known_args(argv)
    # Only commands that pass options through (predict-batch: to Beam) accept unknown ones.
    if extra_options and not getattr(args, "accepts_extra_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra_options)}")
    args.extra_options = extra_options
    import_tensorflow_quietly(verbose=args.verbose)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        # User errors: one clear line, not a traceback.
        print(f"keras-resnest {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
