"""The predict-batch pipeline: match image files, decode and transform them, `RunInference`
keyed by path, write one row per image, and unreadable files to a side output.

    files = MatchFiles(glob) | ReadMatches
      -> DecodeImage  (PIL, RGB, keras_resnest.preprocessing.eval_transform) -> (path, image)
                      side output "unreadable": {"path", "reason"}
      -> RunInference(KeyedModelHandler(ResNeStModelHandler))  -> (path, row of floats)
      -> rows {"path", "labels", "scores"} or {"path", "embedding"} -> JSON Lines or Parquet

Files are read through `apache_beam.io.fileio`, so the glob may name any Beam filesystem
(local, gs://, s3://, hdfs://). Each output is a set of shards named like
`PREFIX-00000-of-00002.jsonl`; the unreadable files go to `PREFIX-errors-...jsonl`.
"""
import io
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

    Args:
        image_size: int. Side of the evaluation crop.
    """

    def __init__(self, image_size):
        self._image_size = image_size
        self._unreadable = Metrics.counter(METRICS_NAMESPACE, UNREADABLE)

    def process(self, readable_file):
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        from keras_resnest.preprocessing import eval_transform

        path = readable_file.metadata.path
        # The same decoding and the same messages as keras_resnest.predict.load_images.
        try:
            data = readable_file.read()
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert("RGB"))
        except UnidentifiedImageError:
            reason = "not an image PIL can read"
        except OSError as error:  # unreadable, or an image PIL knows damaged inside
            reason = f"cannot decode the image ({error})"
        else:
            yield path, eval_transform(pixels, self._image_size).numpy()
            return
        self._unreadable.inc()
        yield beam.pvalue.TaggedOutput(UNREADABLE, {"path": path, "reason": reason})


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
