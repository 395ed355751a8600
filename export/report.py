"""How faithful and how fast an exported model (TFLite, ONNX) is, measured against its Keras model.

`tflite_report` runs the `.tflite` file in the LiteRT interpreter (`ai_edge_litert`, XNNPACK
delegate, 2 threads by default), `onnx_report` the `.onnx` file in onnxruntime (CPU provider,
2 threads), and both the Keras model on the same images, and report:

* `max_abs_logit_diff` and `max_rel_logit_diff` (divided by the largest |Keras logit|);
* `top1_agreement`: fraction of images whose top-1 class matches the Keras model's;
* `size_bytes` of the file, `latency_ms_median`/`latency_ms_p90` of one batch-1 call.

Example:
    >>> import numpy as np, keras_resnest
    >>> from keras_resnest.export.tflite import convert_to_tflite
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3))
    >>> images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    >>> report = tflite_report(convert_to_tflite(model), model, images, latency_runs=5)
    >>> report["top1_agreement"]
    1.0
"""
import time

import numpy as np
from tqdm import tqdm

from keras_resnest import classifier
from keras_resnest.export.tflite import INPUT_NAME

DEFAULT_THREADS = 2


class TFLiteClassifier:
    """Batch-1 LiteRT runner of an exported classifier; quantizes int inputs/outputs itself."""

    def __init__(self, flatbuffer, num_threads=DEFAULT_THREADS):
        from ai_edge_litert.interpreter import Interpreter

        # The default op resolver applies the XNNPACK delegate on CPU.
        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input_details = self.runner.get_input_details()[INPUT_NAME]
        self.output_details = self.runner.get_output_details()

    def quantize_input(self, image):
        dtype = self.input_details["dtype"]
        if not np.issubdtype(dtype, np.integer):
            return image[None].astype(dtype)
        scale, zero_point = self.input_details["quantization"]
        info = np.iinfo(dtype)
        quantized = np.round(image / scale + zero_point)
        return np.clip(quantized, info.min, info.max).astype(dtype)[None]

    def dequantize(self, name, value):
        details = self.output_details[name]
        if not np.issubdtype(details["dtype"], np.integer):
            return value.astype(np.float32)
        scale, zero_point = details["quantization"]
        return (value.astype(np.float32) - zero_point) * scale

    def __call__(self, image):
        """`{"logits": [classes], "probabilities": [classes]}` for one image `[H, W, 3]`."""
        outputs = self.runner(**{INPUT_NAME: self.quantize_input(image)})
        return {name: self.dequantize(name, value)[0] for name, value in outputs.items()}

    def latency_ms(self, image, runs=20, warmup=3):
        """Median and 90th percentile wall time of one invoke, in milliseconds."""
        inputs = {INPUT_NAME: self.quantize_input(image)}
        for _ in range(warmup):
            self.runner(**inputs)
        times = []
        # The runner call adds only a copy of the input and output tensors to the invoke.
        for _ in range(runs):
            start = time.perf_counter()
            self.runner(**inputs)
            times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times)), float(np.percentile(times, 90))


def keras_logits(model, images, batch_size=16):
    head = classifier.classifier_head(model)
    return np.concatenate(
        [np.asarray(head(images[i : i + batch_size], training=False)[0])
         for i in range(0, len(images), batch_size)]
    )


class OnnxClassifier:
    """Batch-1 onnxruntime runner (CPU provider) of an exported classifier.

    It has the API of `TFLiteClassifier`.
    """

    def __init__(self, onnx_bytes, num_threads=DEFAULT_THREADS):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            onnx_bytes, options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [output.name for output in self.session.get_outputs()]

    def __call__(self, image):
        outputs = self.session.run(None, {INPUT_NAME: image[None].astype(np.float32)})
        return {name: value[0] for name, value in zip(self.output_names, outputs)}

    def latency_ms(self, image, runs=20, warmup=3):
        feed = {INPUT_NAME: image[None].astype(np.float32)}
        for _ in range(warmup):
            self.session.run(None, feed)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times)), float(np.percentile(times, 90))


def tflite_report(
    flatbuffer, model, images, *, num_threads=DEFAULT_THREADS, latency_runs=20, progress=False
):
    """Compare a TFLite classifier with its Keras model on `images` (float32 NHWC, 0..255)."""
    runner = TFLiteClassifier(flatbuffer, num_threads=num_threads)
    return _report(
        runner,
        model,
        images,
        size_bytes=len(flatbuffer),
        runtime="XNNPACK",
        num_threads=num_threads,
        latency_runs=latency_runs,
        progress=progress,
        input_dtype=np.dtype(runner.input_details["dtype"]).name,
    )


def onnx_report(
    onnx_bytes, model, images, *, num_threads=DEFAULT_THREADS, latency_runs=20, progress=False
):
    """Compare an ONNX classifier (onnxruntime) with its Keras model on `images`."""
    runner = OnnxClassifier(onnx_bytes, num_threads=num_threads)
    return _report(
        runner,
        model,
        images,
        size_bytes=len(onnx_bytes),
        runtime="onnxruntime",
        num_threads=num_threads,
        latency_runs=latency_runs,
        progress=progress,
        input_dtype="float32",
    )


def _report(
    runner, model, images, *, size_bytes, runtime, num_threads, latency_runs, progress, input_dtype
):
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"report images must be a non-empty (N, H, W, 3) array, got {images.shape}"
        )
    exported_logits = np.stack(
        [
            runner(image)["logits"]
            for image in tqdm(images, desc=f"running {runtime}", unit="image", disable=not progress)
        ]
    )
    reference = keras_logits(model, images)
    difference = np.abs(exported_logits - reference)
    median_ms, p90_ms = runner.latency_ms(images[0], runs=latency_runs)
    return {
        "num_images": int(len(images)),
        "max_abs_logit_diff": float(difference.max()),
        "max_rel_logit_diff": float(difference.max() / max(np.abs(reference).max(), 1e-12)),
        "top1_agreement": float(np.mean(exported_logits.argmax(-1) == reference.argmax(-1))),
        "size_bytes": size_bytes,
        "latency_ms_median": median_ms,
        "latency_ms_p90": p90_ms,
        "num_threads": num_threads,
        "runtime": runtime,
        "input_dtype": input_dtype,
    }


def format_report(report, title="TFLite vs Keras"):
    """Human-readable lines of a `tflite_report` dictionary."""
    return "\n".join(
        [
            f"{title} ({report['num_images']} images, input {report['input_dtype']}):",
            f"  max |logit difference|      {report['max_abs_logit_diff']:.3g}"
            f" (relative {report['max_rel_logit_diff']:.3g})",
            f"  top-1 agreement             {100 * report['top1_agreement']:.2f}%",
            f"  file size                   {report['size_bytes'] / 2**20:.2f} MiB",
            f"  latency ({report.get('runtime', 'XNNPACK')}, {report['num_threads']} threads) "
            f"median {report['latency_ms_median']:.2f} ms, p90 {report['latency_ms_p90']:.2f} ms",
        ]
    )
