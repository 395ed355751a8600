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
    among them) and return its `Summary`. The other arguments are those of `build`."""
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, input_glob, output_prefix, handler, image_size, output_format, top,
              class_names)
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
