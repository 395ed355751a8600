"""Batch prediction throughput: `keras-resnest predict-batch` (Beam's DirectRunner, 1 and 2
worker processes) against single-process `keras_resnest.predict`, on the same image files in
the same run.

Every side is timed end to end from the same saved `.keras` model (random weights, fixed
seed): loading the model, decoding and transforming the JPEGs, running the model. The
pipeline's figure also holds Beam's fixed costs (starting the worker processes, each importing
TensorFlow and loading the model; writing and renaming the output shards), which a larger run
spreads over more images. The host's CPU vector flags are printed with the figures.

    python -m benchmarks.predict_batch [--model resnest50] [--size 224] [--images 200]
        [--workers 1 2] [--batch-size 32]
"""
import argparse
import glob
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import encode, host_cpu_flags, natural_image


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args()


def write_images(folder, count, size):
    """`count` JPEGs a little larger than the crop, of varied shapes."""
    paths = []
    for index in range(count):
        height = size + 32 + (index * 37) % (size // 2)
        width = size + 32 + (index * 53) % (size // 2)
        path = Path(folder) / f"image{index:04d}.jpg"
        path.write_bytes(encode(natural_image(height, width, index), "JPEG", quality=90))
        paths.append(str(path))
    return paths


def time_predict(model_file, paths, size, batch_size):
    """Seconds of single-process predict: load the model, load_images, model.predict."""
    import keras_resnest
    from keras_resnest import classifier
    from keras_resnest.predict import load_images

    start = time.perf_counter()
    model = classifier.classifier_head(keras_resnest.load_model(model_file, compile=False))
    model.predict(load_images(paths, size), batch_size=batch_size, verbose=0)
    return time.perf_counter() - start


def time_pipeline(model_file, folder, size, batch_size, workers, output):
    """(seconds, images predicted) of the predict-batch pipeline on the DirectRunner."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_resnest.beam import pipeline
    from keras_resnest.beam.model_handler import ResNeStModelHandler

    handler = ResNeStModelHandler("unused", str(model_file), size, max_batch_size=batch_size)
    options = PipelineOptions(["--runner=DirectRunner", f"--direct_num_workers={workers}",
                               "--direct_running_mode=multi_processing"])
    start = time.perf_counter()
    summary = pipeline.run(options, os.path.join(folder, "*.jpg"), output, handler, size,
                           top=5)
    return time.perf_counter() - start, summary.predicted


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import keras_resnest

    print(f"host CPU flags: {host_cpu_flags()}; {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, "images")
        os.mkdir(folder)
        paths = write_images(folder, args.images, args.size)
        keras.utils.set_random_seed(0)
        model_file = os.path.join(work, "model.keras")
        keras_resnest.create_model(args.model, weights=None,
                                   input_shape=(args.size, args.size, 3)).save(model_file)
        print(f"{args.model} at {args.size} px, {len(paths)} JPEGs, batches of "
              f"{args.batch_size}; end to end, model loading included", flush=True)

        seconds = time_predict(model_file, paths, args.size, args.batch_size)
        baseline = len(paths) / seconds
        rows = [("predict (one process)", "-", seconds, baseline)]
        for workers in args.workers:
            output = os.path.join(work, f"out{workers}", "predictions")
            seconds, predicted = time_pipeline(model_file, folder, args.size, args.batch_size,
                                               workers, output)
            if predicted != len(paths):
                raise RuntimeError(f"the pipeline predicted {predicted} of {len(paths)} images")
            written = sum(1 for path in glob.glob(f"{output}-?????-of-?????.jsonl")
                          for _ in open(path, encoding="utf-8"))
            if written != len(paths):
                raise RuntimeError(f"the pipeline wrote {written} of {len(paths)} rows")
            rows.append(("predict-batch DirectRunner", str(workers), seconds,
                         len(paths) / seconds))

    print(f"\n{'side':<28} {'workers':>7} {'seconds':>8} {'images/s':>9} {'ratio':>7}")
    for side, workers, seconds, speed in rows:
        print(f"{side:<28} {workers:>7} {seconds:>8.1f} {speed:>9.2f} {speed / baseline:>6.2f}x")


if __name__ == "__main__":
    main()
