"""Batch prediction throughput: `keras-resnest predict-batch` (Beam's DirectRunner, 1 and 2
worker processes) against single-process `keras_resnest.predict` (its streaming
`predict_files`), on the same image files in the same run, read from the local disk or from a
GCS emulator on 127.0.0.1 (`--stores local gs`: the images uploaded to a bucket, the model
read from it, the outputs written to it).

Every side is timed end to end from the same saved `.keras` model (random weights, fixed
seed): loading the model, decoding and transforming the JPEGs, running the model. The
pipeline's figure also holds Beam's fixed costs (starting the worker processes, each importing
TensorFlow and loading the model; writing and renaming the output shards), which a larger run
spreads over more images. The host's CPU vector flags are printed with the figures.

Peak RSS is each process's own high-water mark (`VmHWM`): for the pipeline the largest of its
worker processes (sampled while it runs), for predict the benchmark's process. With the
pipeline's files streamed, it must not grow with the number of images.

    python -m benchmarks.predict_batch [--model resnest50] [--size 224] [--images 200]
        [--workers 1 2] [--batch-size 32] [--stores local gs]
"""
import argparse
import os
import tempfile
import threading
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
    parser.add_argument("--stores", nargs="+", default=["local"], choices=["local", "gs"],
                        help="where the pipeline reads and writes: the local disk, or a GCS "
                        "emulator on 127.0.0.1 (needs the test extra's gcp-storage-emulator)")
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


def peak_rss_mb(pid="self"):
    """The high-water mark of a process's resident memory (VmHWM), in MB; None if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


class WorkerMemory:
    """Samples the peak RSS of Beam's worker processes (`sdk_worker_main`) while a block runs:
    {pid: MB}, the last sample of each (a high-water mark only grows)."""

    def __init__(self, interval=0.5):
        self.peaks = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.wait(self._interval):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                # The worker, not the shell Beam may start it through.
                if b"sdk_worker_main" in command and b"python" in command.split(b"\0")[0] \
                        and self._is_ours(pid):
                    peak = peak_rss_mb(pid)
                    if peak is not None:
                        self.peaks[pid] = peak

    @staticmethod
    def _is_ours(pid):
        """A descendant of this process (other benchmarks may run Beam on the machine)."""
        me = str(os.getpid())
        for _ in range(8):
            try:
                pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                return False
            if pid == me:
                return True
        return False


def time_predict(model_file, paths, size, batch_size):
    """(seconds, peak RSS MB) of single-process predict in its streaming mode
    (`predict_files`: `batch_size` files read and predicted at a time)."""
    import keras_resnest
    from keras_resnest.predict import predict_files

    start = time.perf_counter()
    model = keras_resnest.load_model(model_file, compile=False)
    predicted = sum(1 for prediction in predict_files(model, paths, size, top=5,
                                                      batch_size=batch_size)
                    if prediction.reason is None)
    if predicted != len(paths):
        raise RuntimeError(f"predict predicted {predicted} of {len(paths)} images")
    return time.perf_counter() - start, peak_rss_mb()


def time_pipeline(model_file, input_glob, size, batch_size, workers, output, beam_options=()):
    """(seconds, images predicted, peak RSS MB of each worker) of the predict-batch pipeline
    on the DirectRunner."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_resnest.beam import pipeline
    from keras_resnest.beam.model_handler import ResNeStModelHandler

    handler = ResNeStModelHandler("unused", str(model_file), size, max_batch_size=batch_size)
    options = PipelineOptions(["--runner=DirectRunner", f"--direct_num_workers={workers}",
                               "--direct_running_mode=multi_processing", *beam_options])
    start = time.perf_counter()
    with WorkerMemory() as memory:
        summary = pipeline.run(options, input_glob, output, handler, size, top=5)
    return time.perf_counter() - start, summary.predicted, sorted(memory.peaks.values())


def count_rows(pattern):
    """Rows of the JSON Lines shards matching `pattern`, on any Beam filesystem."""
    from apache_beam.io.filesystems import FileSystems

    (matched,) = FileSystems.match([pattern])
    rows = 0
    for metadata in matched.metadata_list:
        with FileSystems.open(metadata.path) as handle:
            rows += sum(1 for line in handle.read().splitlines() if line.strip())
    return rows


def upload(store, paths, model_file):
    """The images and the model into bucket "bench" of `store`; (input glob, model URL)."""
    store.create_bucket("bench")
    for path in paths:
        store.upload("bench", f"images/{os.path.basename(path)}", Path(path).read_bytes())
    store.upload("bench", "model.keras", Path(model_file).read_bytes())
    return store.url("bench", "images/*.jpg"), store.url("bench", "model.keras")


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import contextlib

    import keras

    import keras_resnest

    print(f"host CPU flags: {host_cpu_flags()}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        folder = os.path.join(work, "images")
        os.mkdir(folder)
        paths = write_images(folder, args.images, args.size)
        keras.utils.set_random_seed(0)
        model_file = os.path.join(work, "model.keras")
        keras_resnest.create_model(args.model, weights=None,
                                   input_shape=(args.size, args.size, 3)).save(model_file)
        print(f"{args.model} at {args.size} px, {len(paths)} JPEGs, batches of "
              f"{args.batch_size}; end to end, model loading included", flush=True)

        seconds, peak = time_predict(model_file, paths, args.size, args.batch_size)
        baseline = len(paths) / seconds
        rows = [("predict (streaming)", "local", "-", seconds, baseline, f"{peak:.0f}")]
        for store_name in args.stores:
            if store_name == "gs":
                # Imported here: the emulator is a test dependency, needed only for "gs".
                import store_emulators as object_stores

                store = stack.enter_context(object_stores.gcs_emulator(Path(work)))
                input_glob, model = upload(store, paths, model_file)
                base, beam_options = store.url("bench", ""), store.beam_options
            else:
                input_glob, model = os.path.join(folder, "*.jpg"), model_file
                base, beam_options = work + "/", []
            for workers in args.workers:
                output = f"{base}out{workers}/predictions"
                seconds, predicted, peaks = time_pipeline(
                    model, input_glob, args.size, args.batch_size, workers, output,
                    beam_options)
                if predicted != len(paths):
                    raise RuntimeError(f"the pipeline predicted {predicted} of {len(paths)} "
                                       "images")
                written = count_rows(f"{output}-?????-of-?????.jsonl")
                if written != len(paths):
                    raise RuntimeError(f"the pipeline wrote {written} of {len(paths)} rows")
                rows.append(("predict-batch DirectRunner", store_name, str(workers), seconds,
                             len(paths) / seconds, "/".join(f"{peak:.0f}" for peak in peaks)
                             or "?"))

    print(f"\n{'side':<28} {'store':<6} {'workers':>7} {'seconds':>8} {'images/s':>9} "
          f"{'ratio':>7}  peak RSS MB (per worker)")
    for side, store_name, workers, seconds, speed, peaks in rows:
        print(f"{side:<28} {store_name:<6} {workers:>7} {seconds:>8.1f} {speed:>9.2f} "
              f"{speed / baseline:>6.2f}x  {peaks}")


if __name__ == "__main__":
    main()
