"""`keras-resnest predict-batch`: top classes (or embeddings) of many images on Apache Beam.

    keras-resnest predict-batch --input 'photos/*.jpg' --output out/photos --model resnest50 \
        --runner DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing

Options this command does not know are Beam pipeline options, passed through to the runner
(`--project`, `--region`, `--temp_location` for Dataflow, ...). Beam is imported by the
handler, not at registration, so `--help` stays fast and works without it.
"""
import logging
import os
import re

from keras_resnest.commands.predict import add_model_arguments

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
FORMATS = ("jsonl", "parquet")  # keras_resnest.beam.pipeline.FORMATS; that module imports Beam
DEFAULT_TOP = 5
DEFAULT_MAX_BATCH_SIZE = 32
NAMED_FILES = 3  # files an error line names before it counts the rest
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
                         help="prefix of the output files (PREFIX-00000-of-0000N.jsonl); "
                         "the command stops if outputs of an earlier run are there")
    command.add_argument("--overwrite", action="store_true",
                         help="remove the outputs of an earlier run under --output first")
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
    _check_input(args.input)
    earlier = _earlier_outputs(args.output)
    if earlier and not args.overwrite:
        raise FileExistsError(
            f"--output {args.output}: expected no outputs of an earlier run there (or "
            f"--overwrite to remove them first; mixed shards would read as one run), found "
            f"{_some(earlier)}")
    return _predict(args, model_name, earlier)


def _check_input(pattern):
    """One line if `pattern` matches no file, matched by Beam as the pipeline matches it (so
    `**` crosses folders, and every Beam filesystem is listed the same way)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        (matched,) = FileSystems.match([pattern])
    except Exception as error:  # noqa: BLE001  (no filesystem for the scheme, no access, ...)
        raise ValueError(f"--input {pattern}: expected a glob Beam can list, listing it "
                         f"failed: {_beam_error(error)}") from None
    if not matched.metadata_list:
        raise FileNotFoundError(f"--input {pattern}: expected a glob matching image files, "
                                "no file matches")


def _earlier_outputs(prefix):
    from keras_resnest.beam.pipeline import existing_outputs

    try:
        return existing_outputs(prefix)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"--output {prefix}: expected a prefix Beam can list, listing it "
                         f"failed: {_beam_error(error)}") from None


def _beam_error(error):
    """The cause of a Beam filesystem error on one line: BeamIOError wraps the real one per
    path (`exception_details`)."""
    details = getattr(error, "exception_details", None)
    if isinstance(details, dict) and details:
        error = next(iter(details.values()))
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _some(paths):
    """'3 files: a, b, c' or '12 files: a, b, c and 9 more'."""
    named = ", ".join(paths[:NAMED_FILES])
    rest = f" and {len(paths) - NAMED_FILES} more" if len(paths) > NAMED_FILES else ""
    return f"{len(paths)} file{'s' if len(paths) > 1 else ''}: {named}{rest}"


def _predict(args, model_name, earlier):
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_resnest import classifier
    from keras_resnest.beam import pipeline
    from keras_resnest.beam.model_handler import ResNeStModelHandler
    from keras_resnest.commands.predict import load_predict_model, read_class_names

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
    if earlier:  # --overwrite, and the model loaded: nothing else can stop the run now
        _remove(args.output, earlier)
    summary = _run_quietly(args.verbose, lambda: pipeline.run(
        options, args.input, args.output, handler, size, args.output_format, top, class_names))
    print(f"predicted   {summary.predicted} images -> {summary.outputs}")
    print(f"unreadable  {summary.unreadable} files -> {summary.errors}")
    return 0


def _remove(prefix, paths):
    """Delete the earlier outputs before the run writes any, so that whatever happens next
    (a failed run writes nothing) no old shard sits among new ones."""
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.delete(paths)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"--output {prefix} --overwrite: expected to remove the earlier "
                         f"outputs, removing them failed: {_beam_error(error)}") from None


def _run_quietly(verbose, run):
    """`run()`, with the worker processes' chatter (`WORKER_CHATTER`) hidden unless `verbose`;
    errors and tracebacks still show."""
    if verbose:
        return run()
    from keras_resnest.quiet_start import filtered_stderr

    with filtered_stderr(drop=WORKER_CHATTER):
        return run()
