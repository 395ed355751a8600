"""The `keras-resnest` command.

Each feature area owns its subcommands in its own module (a `register(subparsers)` function);
this file only assembles them, so `keras-resnest --help` stays fast (TensorFlow is imported by
the handlers, never here).
"""
import argparse
import importlib
import sys

COMMAND_MODULES = (
    "keras_resnest.weights.cli",
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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        # User errors: one clear line, not a traceback.
        print(f"keras-resnest {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
