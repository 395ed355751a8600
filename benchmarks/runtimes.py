"""The CPU runtimes a user could serve ResNeSt with, each timed in its own process.

Used by `python -m benchmarks.inference --runtimes ...`. The parent writes the files the requested
runtimes load, once, from the same weights (the official model with its random init and random
BatchNorm statistics, ported into keras_resnest): a `.keras` file, our SavedModel, ONNX and
TFLite files, and the official model's `torch.onnx.export` file. Then one worker process per
runtime loads its artifact, checks its logits on two fixed images, and waits; the parent asks the
workers in turn for images/s at each batch size, the order reversed every round, so a machine
whose speed drifts affects every runtime alike. The median over the rounds is reported with its
range.

Workers talk over stdin/stdout: "time BATCH SECONDS" -> "RESULT {images_per_second}", "quit".
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, images_per_second

# The official model's normalisation on 0..255 pixels (keras_resnest's runs in its graph). The
# values of keras_resnest.models.resnest.IMAGENET_MEAN/STD, written out: importing that module
# imports Keras and TensorFlow, which the onnxruntime, OpenVINO and torch workers must not load.
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255

# name -> description; the order of the table.
RUNTIMES = {
    "keras": "keras_resnest, tf.function (TF-Serving's graph, traced in Python)",
    "saved_model": "keras_resnest SavedModel, serving_default (what TF-Serving runs)",
    "torch": "official PyTorch, eager",
    "ort_official": "official -> torch.onnx.export -> onnxruntime",
    "ort_ours": "keras_resnest ONNX export -> onnxruntime",
    "openvino_official": "official ONNX -> OpenVINO f32",
    "openvino_ours": "keras_resnest ONNX export -> OpenVINO f32",
    "tflite_fp32": "keras_resnest TFLite fp32, LiteRT XNNPACK",
    "tflite_int8": "keras_resnest TFLite int8, LiteRT XNNPACK",
    "ort_ours_int8": "keras_resnest ONNX int8 (QDQ) -> onnxruntime",
}
REFERENCE = "ort_official"  # the ratios are against the official ONNX file in onnxruntime
# The file each runtime loads (the official PyTorch model is rebuilt from its seed).
ARTIFACTS = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "torch": "model.keras",
    "ort_official": "official.onnx",
    "ort_ours": "ours.onnx",
    "openvino_official": "official.onnx",
    "openvino_ours": "ours.onnx",
    "tflite_fp32": "fp32.tflite",
    "tflite_int8": "int8.tflite",
    "ort_ours_int8": "ours_int8.onnx",
}


def write_artifacts(directory, name, size, torch_model, model, runtimes, progress=print):
    """The files `runtimes` load, all from one set of weights."""
    import torch

    from keras_resnest.export import onnx_export, saved_model, tflite

    directory = Path(directory)
    calibration = np.random.default_rng(2).uniform(0, 255, (8, size, size, 3)).astype("float32")
    writers = {
        "model.keras": lambda path: model.save(path),
        "saved_model": lambda path: saved_model.export_saved_model(model, path),
        "ours.onnx": lambda path: onnx_export.export_onnx(model, path),
        "ours_int8.onnx": lambda path: onnx_export.export_onnx(model, path, "int8", calibration),
        "official.onnx": lambda path: torch.onnx.export(
            torch_model,
            torch.from_numpy(normalise_nchw(calibration[:1])),
            str(path),
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        ),
        "fp32.tflite": lambda path: path.write_bytes(tflite.convert_to_tflite(model)),
        "int8.tflite": lambda path: path.write_bytes(
            tflite.convert_to_tflite(model, "int8", calibration_data=calibration)
        ),
    }
    needed = sorted({ARTIFACTS[runtime] for runtime in runtimes})
    progress(f"writing {', '.join(needed)}...")
    for artifact in needed:
        writers[artifact](directory / artifact)
    (directory / "config.json").write_text(json.dumps({"name": name, "size": size}))


def normalise_nchw(images):
    """The official model's input: normalised, channels first."""
    return ((images - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


def load_runner(runtime, directory, threads):
    """A function `images (N, H, W, 3) float32 0..255 -> logits`, and the batch sizes it takes."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    if runtime in ("keras", "saved_model"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        if runtime == "keras":
            import keras_resnest

            model = keras_resnest.load_model(directory / ARTIFACTS[runtime])
            call = tf.function(lambda x: model(x, training=False))
            return lambda images: call(tf.constant(images)).numpy(), None
        serve = tf.saved_model.load(str(directory / ARTIFACTS[runtime])).signatures[
            "serving_default"
        ]
        # serving_default gives probabilities (and the top 5): its parity is on probabilities.
        return lambda images: serve(image=tf.constant(images))["probabilities"].numpy(), None
    if runtime == "torch":
        import torch

        from keras_resnest.weights.reference import build_randomized

        torch.set_num_threads(threads)
        torch_model = build_randomized(config["name"])

        def run_torch(images):
            with torch.inference_mode():
                return torch_model(torch.from_numpy(normalise_nchw(images))).numpy()

        return run_torch, None
    if runtime.startswith("ort_"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(
            str(directory / ARTIFACTS[runtime]), options, providers=["CPUExecutionProvider"]
        )
        if runtime == "ort_official":
            return lambda images: session.run(None, {"input": normalise_nchw(images)})[0], None
        return lambda images: session.run(["logits"], {"image": images})[0], None
    if runtime.startswith("openvino_"):
        import openvino

        core = openvino.Core()
        official = runtime == "openvino_official"
        network = core.read_model(str(directory / ARTIFACTS[runtime]))
        compiled = {}

        def run_openvino(images):
            batch = len(images)
            if batch not in compiled:  # a static shape per batch size, as a server would
                network.reshape(
                    [batch, 3, config["size"], config["size"]]
                    if official
                    else [batch, config["size"], config["size"], 3]
                )
                compiled[batch] = core.compile_model(
                    network,
                    "CPU",
                    {
                        "INFERENCE_NUM_THREADS": threads,
                        "INFERENCE_PRECISION_HINT": "f32",
                        "PERFORMANCE_HINT": "LATENCY",
                    },
                )
            inputs = normalise_nchw(images) if official else images
            return compiled[batch](inputs)[compiled[batch].output(0)]

        return run_openvino, None
    if runtime.startswith("tflite_"):
        from keras_resnest.export.report import TFLiteClassifier

        runner = TFLiteClassifier(
            (directory / ARTIFACTS[runtime]).read_bytes(), num_threads=threads
        )
        # The TFLite export has a fixed batch of 1 (no SHAPE ops in the flatbuffer).
        return lambda images: np.stack([runner(image)["logits"] for image in images]), (1,)
    raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")


def worker(runtime, directory, threads):
    """Serve timing requests for one runtime over stdin/stdout (see the module docstring)."""
    run, batches = load_runner(runtime, directory, threads)
    check = np.load(Path(directory) / "check_images.npy")
    outputs = {"probabilities" if runtime == "saved_model" else "logits": run(check).tolist()}
    print("READY " + json.dumps({**outputs, "batches": batches}), flush=True)
    size = check.shape[1]
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            return
        batch, seconds = int(command[1]), float(command[2])
        images = np.random.default_rng(batch).uniform(0, 255, (batch, size, size, 3))
        images = images.astype(np.float32)
        speed = images_per_second(lambda: run(images), batch, seconds)
        print("RESULT " + json.dumps(speed), flush=True)


class Worker:
    """The parent's handle on one runtime's process."""

    def __init__(self, runtime, directory, threads):
        self.runtime = runtime
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.runtimes", runtime, str(directory), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        ready = self._reply("READY ")
        self.output_kind = "probabilities" if "probabilities" in ready else "logits"
        self.outputs = np.array(ready[self.output_kind])
        self.batches = ready["batches"]

    def _reply(self, prefix):
        for line in self.process.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        raise RuntimeError(f"{self.runtime} worker failed:\n{self.process.stderr.read()[-3000:]}")

    def images_per_second(self, batch, seconds):
        if self.batches is not None and batch not in self.batches:
            return None
        self.process.stdin.write(f"time {batch} {seconds}\n")
        self.process.stdin.flush()
        return self._reply("RESULT ")

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
