"""The `keras-resnest` command.

Each feature area owns its subcommands in its own module (a `register(subparsers)` function);
this file only assembles them, so `keras-resnest --help` stays fast (TensorFlow is imported by
the handlers; the console script is `keras_resnest_cli`, which keeps `import keras_resnest` from
importing Keras). Once the arguments parse, TensorFlow is imported with its C++ start-up lines
hidden unless `--verbose` is given (`keras_resnest.quiet_start`), then Keras and the package's
classes (`keras_resnest.import_api`).

Every error a user can cause or meet (a bad argument, a missing or unwritable file, a failed
download, a full disk) ends the command with one line on stderr and exit code 2; only a bug
prints a traceback.
"""
import argparse
import errno
import importlib
import logging
import os
import sys

from keras_resnest.quiet_start import import_tensorflow_quietly

COMMAND_MODULES = (
    "keras_resnest.commands.convert",
    "keras_resnest.commands.predict",
    "keras_resnest.commands.predict_batch",
    "keras_resnest.commands.export",
    "keras_resnest.commands.train",
)
# The output flag of the commands that write a file or a prefix: checked here, before any
# model is built, so an output under a regular file fails in a second rather than after a
# conversion (or, for predict-batch, inside a Beam worker). `train` checks its RUN_DIR itself,
# with a test file write (training.loop).
OUTPUT_FLAGS = {"export": "-o", "convert": "-o", "predict-batch": "--output"}
# TensorFlow's errors of files, disks and memory: foreseeable, so one line each. Other
# `tf.errors.OpError`s (a shape mismatch in a graph, ...) are bugs and keep their traceback.
TF_ENVIRONMENT_ERRORS = ("NotFoundError", "PermissionDeniedError", "AlreadyExistsError",
                         "ResourceExhaustedError", "DataLossError")


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


def blocking_file(path):
    """The nearest existing ancestor of `path` if it is not a directory (a regular file
    where a folder must be), else None."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return None if os.path.isdir(parent) else parent


def check_output_location(args):
    """Refuses an output that cannot be created because a file stands where a folder must."""
    flag = OUTPUT_FLAGS.get(args.command)
    output = getattr(args, "output", None)
    if flag is None or output is None or "://" in str(output):  # gs://...: Beam's filesystems
        return
    # A TF-Serving export's -o is the folder that gets <name>/<version>/ and the configs.
    folder = args.command == "export" and getattr(args, "format", None) == "serving"
    blocker = blocking_file(os.path.join(output, "x") if folder else output)
    if blocker is not None:
        raise ValueError(f"{flag} {output}: cannot be created because {blocker} is a file; "
                         "expected a path whose folders are directories or do not exist yet; "
                         f"got a regular file at {blocker}")


def describe_os_error(error):
    """One line for an `OSError`: our own messages as they are; the operating system's
    ("[Errno 20] Not a directory: 'x'") with the path and what it means."""
    if error.errno is None or error.strerror is None:
        return " ".join(str(error).split())  # raised with a message by keras_resnest
    path = error.filename
    if path is None:
        return f"{error.strerror} (errno {errno.errorcode.get(error.errno, error.errno)})"
    # makedirs under a regular file says "File exists" or "Not a directory": name the file.
    blocker = blocking_file(os.path.join(os.fspath(path), "x")) if error.errno in (
        errno.ENOTDIR, errno.EEXIST) else None
    if blocker is not None:
        return (f"{path}: cannot create a folder there because {blocker} is a file; expected "
                "a directory or a path that does not exist yet; got a regular file")
    target = f"{path} -> {error.filename2}" if error.filename2 else f"{path}"
    return f"{target}: {error.strerror} (errno {errno.errorcode.get(error.errno, error.errno)})"


def quiet_libraries(verbose):
    """huggingface_hub logs each retry of an unreachable Hub ("Retrying in 1s [Retry 1/5]"):
    the command's own error line says what failed, so they show only with --verbose."""
    if not verbose:
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def main(argv=None):
    parser = build_parser()
    args, extra_options = parser.parse_known_args(argv)
    # Only commands that pass options through (predict-batch: to Beam) accept unknown ones.
    if extra_options and not getattr(args, "accepts_extra_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra_options)}")
    args.extra_options = extra_options
    quiet_libraries(args.verbose)
    import_tensorflow_quietly(verbose=args.verbose)
    import tensorflow as tf

    tf_errors = tuple(getattr(tf.errors, name) for name in TF_ENVIRONMENT_ERRORS)
    prefix = f"keras-resnest {args.command}: error:"
    try:
        check_output_location(args)
        return args.func(args) or 0
    except ValueError as error:
        # User errors: one clear line, not a traceback; one line per problem where a command
        # checks several things at once (`lines`: predict-batch's paths).
        for line in getattr(error, "lines", None) or [str(error)]:
            print(f"{prefix} {' '.join(line.split())}", file=sys.stderr)
        return 2
    except OSError as error:
        # Missing files, failed downloads (WeightsDownloadError), full disks, permissions.
        print(f"{prefix} {describe_os_error(error)}", file=sys.stderr)
        return 2
    except tf_errors as error:
        print(f"{prefix} {type(error).__name__}: {' '.join(error.message.split())}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keras-resnest {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
