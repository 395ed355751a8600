"""`keras-resnest predict-batch`: top classes (or embeddings) of many images on Apache Beam.

    keras-resnest predict-batch --input 'photos/*.jpg' --output out/photos --model resnest50 \
        --runner DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing

Options this command does not know are Beam pipeline options, passed through to the runner
(`--project`, `--region`, `--temp_location` for Dataflow, ...). Beam is imported by the
handler, not at registration, so `--help` stays fast and works without it.
"""
import glob
import logging
import os
import re

from keras_resnest.predict_cli import add_model_arguments

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
FORMATS = ("jsonl", "parquet")  # keras_resnest.beam.pipeline.FORMATS; that module imports Beam
DEFAULT_TOP = 5
DEFAULT_MAX_BATCH_SIZE = 32
# What Beam's local worker processes print that a user cannot act on, hidden without --verbose:
# TensorFlow's start-up lines, logged before absl is initialised (hence the zero date, "I0000
# 00:00:..."; the launcher hides its own with quiet_start), and Beam's info and warning log
# lines ("Resource module is not available", "apitools not found", its own log relay).
WORKER_CHATTER = re.compile(
    rb"([EWI]0000 00:00:|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|(INFO|WARNING):(root|__main__|apache_beam[\w.]*):)")


def register(subparsers):
    command = subparsers.add_parser(
        "predict-batch", help="top classes or embeddings of many images, on Apache Beam",
        description="Offline prediction with Beam's RunInference, on the DirectRunner locally "
        "or on Dataflow, Flink or Spark. Images get the official evaluation transform; each "
        "output row holds a path and its top classes and scores (or its pooled features with "
        "--embeddings). Files that are not readable images are listed in "
        "OUTPUT-errors-*.jsonl and never fail the job. Other options are passed to Beam "
        "(e.g. --direct_num_workers=2 --direct_running_mode=multi_processing). Needs "
        'pip install "keras-resnest[beam]".')
    command.add_argument("--input", required=True, metavar="GLOB",
                         help="image files, on any Beam filesystem (quote the glob)")
    command.add_argument("--output", required=True, metavar="PREFIX",
                         help="prefix of the output files (PREFIX-00000-of-0000N.jsonl)")
    add_model_arguments(command, weights_note="; readable where the workers run")
    command.add_argument("--format", default="jsonl", dest="output_format",
                         help="jsonl (default) or parquet")
    command.add_argument("--top", type=int, default=None,
                         help=f"classes per image (default {DEFAULT_TOP}, or all if fewer)")
    command.add_argument("--embeddings", action="store_true",
                         help="write the pooled features (the input of the classifier) "
                         "instead of classes")
    command.add_argument("--size", type=int, default=None,
                         help="evaluation crop (default: the model's, e.g. 224 for resnest50)")
    command.add_argument("--batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                         help=f"largest batch per model call (default {DEFAULT_MAX_BATCH_SIZE})")
    command.add_argument("--runner", default="DirectRunner", help="Beam runner: "
                         f"{', '.join(RUNNERS)} (default DirectRunner)")
    command.set_defaults(func=run_predict_batch, accepts_extra_options=True)


def run_predict_batch(args):
    root = logging.getLogger()
    level = root.level
    if not args.verbose:  # Beam's info and warning logs (its imports log some): not the user's
        root.setLevel(logging.ERROR)
    try:
        return _check_then_predict(args)
    finally:
        root.setLevel(level)


def _check_then_predict(args):
    from keras_resnest.models import resolve_model_name

    # Everything that can be checked without the model is checked before it is built.
    try:
        import apache_beam  # noqa: F401
    except ImportError as error:
        raise ValueError('predict-batch needs Apache Beam: pip install "keras-resnest[beam]" '
                         f"(import apache_beam failed: {error})") from None
    if args.runner not in RUNNERS:
        raise ValueError(f"--runner {args.runner}: expected one of {', '.join(RUNNERS)}")
    if args.output_format not in FORMATS:
        raise ValueError(f"--format {args.output_format}: expected one of {', '.join(FORMATS)}")
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top {args.top}: must be >= 1")
    if args.top is not None and args.embeddings:
        raise ValueError(f"--top {args.top}: --embeddings writes features, not classes")
    if args.size is not None and args.size < 32:
        raise ValueError(f"--size {args.size}: must be >= 32")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be >= 1")
    model_name = resolve_model_name(args.model)
    if "://" not in args.input and not any(map(os.path.isfile, glob.iglob(args.input))):
        raise FileNotFoundError(f"--input {args.input}: expected a glob matching image files, "
                                "no file matches")
    return _predict(args, model_name)


def _predict(args, model_name):
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_resnest import classifier
    from keras_resnest.beam import pipeline
    from keras_resnest.beam.model_handler import ResNeStModelHandler
    from keras_resnest.predict_cli import load_predict_model, read_class_names

    class_names, names_source = read_class_names(args)
    # Loaded here once for what the workers need to agree on (size, classes) and so a bad
    # model fails in one line before any worker starts.
    model, size = load_predict_model(model_name, args)
    num_classes = classifier.num_classes(model)
    del model
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{names_source} has {len(class_names)} class names but the model has "
                         f"{num_classes} classes")
    if args.top is not None and args.top > num_classes:
        raise ValueError(f"--top {args.top}: the model has only {num_classes} classes")
    top = None if args.embeddings else args.top or min(DEFAULT_TOP, num_classes)

    # Worker processes may start elsewhere than here: a local file is named absolutely.
    weights = os.path.abspath(args.weights) if os.path.isfile(args.weights) else args.weights
    handler = ResNeStModelHandler(model_name, weights, size, embeddings=args.embeddings,
                                  max_batch_size=args.batch_size)
    quiet = [] if args.verbose or any(option.startswith("--default_sdk_harness_log_level")
                                      for option in args.extra_options) else [
        # The worker processes log every bundle at INFO: as quiet as the other commands.
        "--default_sdk_harness_log_level=ERROR"]
    options = PipelineOptions([f"--runner={args.runner}", *quiet, *args.extra_options])
    summary = _run_quietly(args.verbose, lambda: pipeline.run(
        options, args.input, args.output, handler, size, args.output_format, top, class_names))
    print(f"predicted   {summary.predicted} images -> {summary.outputs}")
    print(f"unreadable  {summary.unreadable} files -> {summary.errors}")
    return 0


def _run_quietly(verbose, run):
    """`run()`, with the worker processes' chatter (`WORKER_CHATTER`) hidden unless `verbose`;
    errors and tracebacks still show."""
    if verbose:
        return run()
    from keras_resnest.quiet_start import filtered_stderr

    with filtered_stderr(drop=WORKER_CHATTER):
        return run()
