"""The predict-batch pipeline: match image files, decode and transform them, `RunInference`
keyed by path, write one row per image, and unreadable files to a side output.

    files = MatchFiles(glob) | ReadMatches
      -> DecodeImage  (keras_resnest.images.read_for_eval) -> (path, image)
                      side output "unreadable": {"path", "reason"}, whatever went wrong
      -> RunInference(KeyedModelHandler(ResNeStModelHandler))  -> (path, row of floats)
      -> rows {"path", "labels", "scores"} or {"path", "embedding"} -> JSON Lines or Parquet

Files are read through `apache_beam.io.fileio`, so the glob may name any Beam filesystem
(local, gs://, s3://, hdfs://). Each output is a set of shards named like
`PREFIX-00000-of-00002.jsonl`; the unreadable files go to `PREFIX-errors-...jsonl`.
"""
import json
import re
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

FORMATS = ("jsonl", "parquet")
METRICS_NAMESPACE = "keras_resnest_predict_batch"
UNREADABLE = "unreadable"


@dataclass
class Summary:
    """What a run did: images predicted, files unreadable, and the output file patterns."""
    predicted: int
    unreadable: int
    outputs: str
    errors: str


class DecodeImage(beam.DoFn):
    """A matched file -> (path, evaluation-transformed float32 image), or an error record
    {"path", "reason"} on the "unreadable" output: a bad file never fails the job.

    The file is read by `keras_resnest.images.read_for_eval`, the reader of `predict`, so the
    same file gets the same pixels or the same reason on both paths.

    Args:
        image_size: int. Side of the evaluation crop.
    """

    def __init__(self, image_size):
        self._image_size = image_size
        self._unreadable = Metrics.counter(METRICS_NAMESPACE, UNREADABLE)

    def process(self, readable_file):
        path = readable_file.metadata.path
        # One file must never fail the job (Beam retries a failed bundle, then fails the
        # whole run): whatever goes wrong for this file, the reader's reasons or anything
        # else (a file that vanished since the match, a filesystem error), is its row.
        try:
            image, reason = _read_for_eval(readable_file, self._image_size)
        except Exception as error:  # noqa: BLE001
            image, reason = None, f"cannot read the file ({_one_line(error)})"
        if reason is None:
            yield path, image
            return
        self._unreadable.inc()
        yield beam.pvalue.TaggedOutput(UNREADABLE, {"path": path, "reason": reason})


def _read_for_eval(readable_file, image_size):
    from keras_resnest.images import read_for_eval

    # The open file, not its bytes: the reader looks at the header first, so a huge file that
    # is no image (or a bomb) is refused without being read whole.
    with readable_file.open(mime_type="application/octet-stream") as handle:
        if not handle.seekable():  # the reader seeks back to the start after the header
            return read_for_eval(handle.read(), image_size)
        return read_for_eval(handle, image_size)


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class ToRow(beam.DoFn):
    """(path, model output) -> the row written for the image.

    Args:
        top: int or None. Classes per image; None writes the embedding (pooled features).
        class_names: list of str or None. Names of the classes (see
            `keras_resnest.predict.top_classes`). Defaults to None.
    """

    def __init__(self, top, class_names=None):
        self._top = top
        self._class_names = class_names
        self._predicted = Metrics.counter(METRICS_NAMESPACE, "predicted")

    def process(self, keyed_output):
        from keras_resnest.predict import top_classes

        path, output = keyed_output
        self._predicted.inc()
        if self._top is None:
            yield {"path": path, "embedding": [float(value) for value in output]}
            return
        (best,) = top_classes(output[None], self._top, self._class_names)
        yield {"path": path, "labels": [name for name, _ in best],
               "scores": [float(score) for _, score in best]}


def parquet_schema(embeddings):
    import pyarrow as pa

    if embeddings:
        return pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32()))])
    return pa.schema([("path", pa.string()), ("labels", pa.list_(pa.string())),
                      ("scores", pa.list_(pa.float64()))])


def build(pipeline, input_glob, output_prefix, handler, image_size, output_format="jsonl",
          top=None, class_names=None):
    """Add the predict-batch transforms to `pipeline`.

    Args:
        pipeline: apache_beam.Pipeline. Where the transforms go.
        input_glob: str. Image files, on any Beam filesystem.
        output_prefix: str. Path prefix of the output shards.
        handler: keras_resnest.beam.model_handler.ResNeStModelHandler. The model.
        image_size: int. Side of the evaluation crop (the handler's model input).
        output_format: str. "jsonl" or "parquet". Defaults to "jsonl".
        top: int or None. Classes per image; None writes embeddings. Defaults to None.
        class_names: list of str or None. Names of the classes. Defaults to None.
    """
    decoded = (
        pipeline
        | "Match" >> fileio.MatchFiles(input_glob)
        # One glob is one element until here: spread the files over the workers.
        | "Spread" >> beam.Reshuffle()
        | "Read" >> fileio.ReadMatches()
        | "Decode" >> beam.ParDo(DecodeImage(image_size)).with_outputs(UNREADABLE, main="images")
    )
    rows = (
        decoded.images
        | "Predict" >> RunInference(KeyedModelHandler(handler))
        | "Rows" >> beam.ParDo(ToRow(top, class_names))
    )
    if output_format == "parquet":
        rows | "WriteParquet" >> beam.io.WriteToParquet(
            output_prefix, parquet_schema(top is None), file_name_suffix=".parquet")
    else:
        rows | "WriteJsonl" >> _write_jsonl(output_prefix)
    decoded[UNREADABLE] | "WriteErrors" >> _write_jsonl(f"{output_prefix}-errors")


def _write_jsonl(prefix):
    return beam.Map(json.dumps) | beam.io.WriteToText(prefix, file_name_suffix=".jsonl")


def run(options, input_glob, output_prefix, handler, image_size, output_format="jsonl",
        top=None, class_names=None):
    """Run the pipeline to the end with `options` (apache_beam PipelineOptions; the runner is
    among them) and return its `Summary`. The other arguments are those of `build`.

    A run that fails leaves no `beam-temp-*` folder of its outputs behind (`remove_temp_folders`).
    """
    try:
        with beam.Pipeline(options=options) as pipeline:
            build(pipeline, input_glob, output_prefix, handler, image_size, output_format, top,
                  class_names)
    except BaseException:
        # Beam removes its temporary folders only when the writes finish; a failed (or
        # interrupted) run would leave them next to the outputs, and the run's error is what
        # the user needs to see, not a failure to clean up.
        try:
            remove_temp_folders(output_prefix)
        except Exception:  # noqa: BLE001
            pass
        raise
    counters = pipeline.result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    totals = {UNREADABLE: 0, "predicted": 0}
    for counter in counters:
        # Runners that do not commit metrics (some portable ones) still report attempts.
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] += value or 0
    suffix = "." + output_format
    return Summary(predicted=totals["predicted"], unreadable=totals[UNREADABLE],
                   outputs=f"{output_prefix}-?????-of-?????{suffix}",
                   errors=f"{output_prefix}-errors-?????-of-?????.jsonl")


def existing_outputs(output_prefix):
    """The files a run with `output_prefix` writes that exist already, sorted: its shards in
    any format (`PREFIX-00000-of-00002.jsonl`, `.parquet`) and its error shards
    (`PREFIX-errors-...`), on any Beam filesystem. Other files that share the prefix
    (`PREFIX-notes.txt`) are not outputs and are not listed."""
    from apache_beam.io.filesystems import FileSystems

    base, name = FileSystems.split(output_prefix)
    # Beam's shard names: "-SSSSS-of-NNNNN", five digits or more.
    shard = re.compile(re.escape(name) + r"(-errors)?-\d{5,}-of-\d{5,}\.(jsonl|parquet)\Z")
    (matched,) = FileSystems.match([_escape_glob(output_prefix) + "-*"])
    return sorted(metadata.path for metadata in matched.metadata_list
                  if shard.match(FileSystems.split(metadata.path)[1]))


def remove_temp_folders(output_prefix):
    """Remove the `beam-temp-NAME-<hex>` and `beam-temp-NAME-errors-<hex>` folders Beam's
    writers of `output_prefix` (`BASE/NAME`) make next to the outputs; returns what it
    removed. Through `FileSystems`, so on every Beam filesystem (on object stores a folder is
    the objects under it)."""
    import os

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.localfilesystem import LocalFileSystem

    base, name = FileSystems.split(output_prefix)
    temp_name = re.compile("beam-temp-" + re.escape(name) + r"(-errors)?-[0-9a-f]{32}\Z")
    pattern = FileSystems.join(base, "beam-temp-" + _escape_glob(name) + "-*")
    # Beam's match lists files, never folders: the files inside name their folders.
    (matched,) = FileSystems.match([pattern + "/**"])
    folders = set()
    for metadata in matched.metadata_list:
        relative = metadata.path[len(FileSystems.join(base, "")):]
        folder = relative.replace("\\", "/").split("/")[0]
        if temp_name.match(folder):
            folders.add(FileSystems.join(base, folder))
    if isinstance(FileSystems.get_filesystem(output_prefix), LocalFileSystem):
        # A run that failed before writing leaves an empty folder, which no match finds.
        folders.update(os.path.join(base or ".", entry) for entry in
                       (os.listdir(base or ".") if os.path.isdir(base or ".") else [])
                       if temp_name.match(entry))
    folders = sorted(folders)
    for folder in folders:
        # Local and HDFS folders are deleted recursively; on object stores the folder itself
        # is no object, so what is under it goes by its paths.
        FileSystems.delete([folder])
        (inside,) = FileSystems.match([_escape_glob(folder) + "/**"])
        if inside.metadata_list:
            FileSystems.delete([metadata.path for metadata in inside.metadata_list])
    return folders


def _escape_glob(path):
    """`path` with Beam's glob characters (`*`, `?`, `[`) matching themselves."""
    return re.sub(r"([*?[])", r"[\1]", path)
