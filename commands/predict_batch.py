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
                         help="image files, local or on any Beam filesystem (gs://, s3://; "
                         "quote the glob)")
    command.add_argument("--output", required=True, metavar="PREFIX",
                         help="prefix of the output files (PREFIX-00000-of-0000N.jsonl); "
                         "the command stops if outputs of an earlier run are there")
    command.add_argument("--overwrite", action="store_true",
                         help="remove the outputs of an earlier run under --output first")
    add_model_arguments(command, weights_note="; local or on a Beam filesystem (gs://, "
                        "s3://), readable where the workers run", path_type=str)
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
    options = _pipeline_options(args)
    earlier = _check_paths(args, model_name, options)
    return _predict(args, model_name, earlier, options)


class PathProblems(ValueError):
    """Every problem the launcher found with the paths, one line each (`lines`;
    keras_resnest.commands.main prints each on its own line)."""

    def __init__(self, lines):
        super().__init__("; ".join(lines))
        self.lines = lines


def _pipeline_options(args):
    """Beam's options, given to `FileSystems` before the checks: they read the stores as the
    pipeline will (--s3_endpoint_url, --s3_region_name, GCS credentials, ...)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    quiet = [] if args.verbose or any(option.startswith("--default_sdk_harness_log_level")
                                      for option in args.extra_options) else [
        # The worker processes log every bundle at INFO: as quiet as the other commands.
        "--default_sdk_harness_log_level=ERROR"]
    options = PipelineOptions([f"--runner={args.runner}", *quiet, *args.extra_options])
    FileSystems.set_options(options)
    return options


def _check_paths(args, model_name, options):
    """Check every path before any work (before the model is loaded): the input, the output,
    the model or weights file, the labels file, the weights mirror. Raises `PathProblems`
    with one line per problem; returns the earlier outputs under --output (for --overwrite).
    """
    problems = []
    earlier = []
    problem = _bucket_line("--input", args.input, "a glob in a readable bucket")
    if problem is None:
        problem = _input_problem(args.input)
    if problem is not None:
        problems.append(problem)
    problem = _bucket_line("--output", args.output, "a prefix in a writable bucket")
    if problem is None:
        try:
            earlier = _earlier_outputs(args.output)
        except ValueError as error:
            problem = str(error)
    if problem is None and earlier and not args.overwrite:
        problem = (f"--output {args.output}: expected no outputs of an earlier run there (or "
                   f"--overwrite to remove them first; mixed shards would read as one run), "
                   f"found {_some(earlier)}")
    if problem is not None:
        problems.append(problem)
    if _is_weights_file(args.weights):
        problems.append(_file_problem("--weights", args.weights, "a .keras model file"
                                      if args.weights.endswith(".keras") else "a weights file"))
    if args.labels is not None:
        problems.append(_file_problem("--labels", args.labels, "a labels file"))
    if args.weights.lower() == "imagenet":
        problems.append(_mirror_problem(model_name))
    if args.runner == "DataflowRunner":
        problems.extend(_local_on_dataflow(args))
    problems = [problem for problem in problems if problem is not None]
    if problems:
        raise PathProblems(problems)
    return earlier


def _is_weights_file(weights):
    from keras_resnest import filesystems
    from keras_resnest.model_source import NO_WEIGHTS

    return weights.lower() not in ("imagenet", *NO_WEIGHTS) and filesystems.scheme(weights) \
        not in filesystems.NOT_FILESYSTEMS


def _bucket_line(flag, path, expected):
    """One line if the filesystem or bucket of `path` cannot be used, else None."""
    from keras_resnest import filesystems

    if not filesystems.is_remote(path):
        return None
    problem = filesystems.filesystem_problem(path) or filesystems.bucket_problem(path)
    return None if problem is None else f"{flag} {path}: expected {expected}, {problem}"


def _file_problem(flag, path, expected):
    """One line if the file `path` (local or in a bucket) is not there, else None."""
    from keras_resnest import filesystems

    if filesystems.is_remote(path):
        problem = _bucket_line(flag, path, expected)
        if problem is not None:
            return problem
        try:
            found = filesystems.exists(path)
        except Exception as error:  # noqa: BLE001
            return (f"{flag} {path}: expected {expected} Beam can read, reading it failed: "
                    f"{filesystems.one_line(error)}")
    else:
        found = os.path.isfile(path)
    return None if found else f"{flag} {path}: expected {expected}, no such file"


def _mirror_problem(model_name):
    """One line if KERAS_RESNEST_WEIGHTS_URL names a bucket without this model's file: the
    launcher may have the converted weights cached and never look, the workers will."""
    from keras_resnest import filesystems
    from keras_resnest.weights.pretrained import MIRROR_ENV, pretrained_file

    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not filesystems.is_remote(mirror):
        return None
    path = mirror.rstrip("/") + "/" + pretrained_file(model_name).filename
    problem = _file_problem(MIRROR_ENV, path, "the official weights file of " + model_name)
    return None if problem is None else problem.replace(f"{MIRROR_ENV} ", f"{MIRROR_ENV}=", 1)


def _local_on_dataflow(args):
    """Lines for the paths Dataflow's workers cannot read: they are other machines, and see
    none of this one's files."""
    from keras_resnest import filesystems
    from keras_resnest.weights.pretrained import MIRROR_ENV

    paths = [("--input", args.input), ("--output", args.output)]
    if _is_weights_file(args.weights):
        paths.append(("--weights", args.weights))
    if args.labels is not None:
        paths.append(("--labels", args.labels))
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if args.weights.lower() == "imagenet" and mirror and "://" not in mirror:
        paths.append((MIRROR_ENV + "=", mirror))
    return [f"{flag}{'' if flag.endswith('=') else ' '}{path}: expected a path the "
            "DataflowRunner's workers can read (gs://...), got a path on this machine"
            for flag, path in paths if not filesystems.is_remote(path)]


def _input_problem(pattern):
    """One line if `pattern` matches no file, matched by Beam as the pipeline matches it (so
    `**` crosses folders, and every Beam filesystem is listed the same way); else None."""
    from apache_beam.io.filesystems import FileSystems

    try:
        (matched,) = FileSystems.match([pattern])
    except Exception as error:  # noqa: BLE001  (no filesystem for the scheme, no access, ...)
        return (f"--input {pattern}: expected a glob Beam can list, listing it failed: "
                f"{_beam_error(error)}")
    if not matched.metadata_list:
        return f"--input {pattern}: expected a glob matching image files, no file matches"
    return None


def _earlier_outputs(prefix):
    from keras_resnest.beam.pipeline import existing_outputs

    try:
        return existing_outputs(prefix)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"--output {prefix}: expected a prefix Beam can list, listing it "
                         f"failed: {_beam_error(error)}") from None


def _beam_error(error):
    from keras_resnest.filesystems import one_line

    return one_line(error)


def _some(paths):
    """'3 files: a, b, c' or '12 files: a, b, c and 9 more'."""
    named = ", ".join(paths[:NAMED_FILES])
    rest = f" and {len(paths) - NAMED_FILES} more" if len(paths) > NAMED_FILES else ""
    return f"{len(paths)} file{'s' if len(paths) > 1 else ''}: {named}{rest}"


def _predict(args, model_name, earlier, options):
    import copy

    from keras_resnest import classifier, filesystems
    from keras_resnest.beam import pipeline
    from keras_resnest.beam.model_handler import ResNeStModelHandler
    from keras_resnest.commands.predict import load_predict_model, read_class_names
    from keras_resnest.weights.pretrained import MIRROR_ENV

    class_names, names_source = read_class_names(args)
    # Loaded here once for what the workers need to agree on (size, classes) and so a bad
    # model fails in one line before any worker starts; from a copy of a remote file (the
    # workers read it from the bucket themselves).
    with filesystems.local_copy(args.weights) as weights:
        local = copy.copy(args)
        local.weights = weights
        model, size = load_predict_model(model_name, local)
    num_classes = classifier.num_classes(model)
    del model
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{names_source} has {len(class_names)} class names but the model has "
                         f"{num_classes} classes")
    if args.top is not None and args.top > num_classes:
        raise ValueError(f"--top {args.top}: the model has only {num_classes} classes")
    top = None if args.embeddings else args.top or min(DEFAULT_TOP, num_classes)

    # Worker processes may start elsewhere than here: a local file is named absolutely (on
    # the DirectRunner they share this disk); a bucket path is read by the workers.
    weights = os.path.abspath(args.weights) if os.path.isfile(args.weights) else args.weights
    # The workers' environment is not the launcher's on Dataflow, Flink or Spark.
    mirror = os.environ.get(MIRROR_ENV) if args.weights.lower() == "imagenet" else None
    handler = ResNeStModelHandler(model_name, weights, size, embeddings=args.embeddings,
                                  max_batch_size=args.batch_size, weights_mirror=mirror)
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
