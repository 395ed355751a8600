"""What several benchmarks share: timing, same-weights model pairs, and the report inputs.

Only numpy is imported here at module level: the runtime workers of `benchmarks.runtimes`
(onnxruntime, OpenVINO, torch) import this module and must not load Keras or TensorFlow.
"""
import functools
import io
import time
from pathlib import Path

import numpy as np

# The repository root: the working directory of the benchmarks' own subprocesses, which run
# as `python -m benchmarks.<name>`.
ROOT = Path(__file__).resolve().parents[1]
# The side of the inputs of the small ResNeSt-14d report model and of the digits model.
SMALL_SIZE = 64
DIGIT_SIZE = 32


def images_per_second(run, batch, seconds, min_calls=3, warmup=2):
    """Images per second of `run()`, timed until both `seconds` and `min_calls` are reached.

    Args:
        run: callable. Processes one batch per call; its result is ignored.
        batch: int. Images per call.
        seconds: float. The least timed time; 0 times exactly `min_calls` calls.
        min_calls: int. The least number of timed calls. Defaults to 3.
        warmup: int. Untimed calls first (caches, tracing, the other framework's spinning
            threads). Defaults to 2.
    """
    for _ in range(warmup):
        run()
    count, start = 0, time.perf_counter()
    while True:
        run()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= min_calls:
            return count * batch / elapsed


def random_images(batch, height, width, seed=0):
    """Uniform 0..255 float32 NHWC images, the inputs of the parity figures."""
    shape = (batch, height, width, 3)
    return np.random.RandomState(seed).uniform(0, 255, shape).astype("float32")


def port(name, torch_model, **create_kwargs):
    """keras_resnest's `name` carrying the weights of the official `torch_model`.

    Args:
        name: str. A keras_resnest model name.
        torch_model: torch.nn.Module. The official model of that name.
        **create_kwargs: passed to `keras_resnest.create_model`; by default no weights and
            logits (`classifier_activation=None`), as the official model gives.
    """
    import keras_resnest
    from keras_resnest.weights import reference

    options = {"weights": None, "classifier_activation": None, **create_kwargs}
    model = keras_resnest.create_model(name, **options)
    keras_resnest.load_torch_state_dict(model, reference.state_dict_numpy(torch_model))
    return model


def ported_reference(name, seed=0, torch_kwargs=None, **create_kwargs):
    """(official model, keras_resnest model) with the same random weights and BatchNorm state.

    Args:
        name: str. A keras_resnest model name.
        seed: int. Seeds the official model's initialisation. Defaults to 0.
        torch_kwargs: dict or None. Passed to the official builder, e.g. {"dilation": 2}.
            Defaults to None.
        **create_kwargs: passed to `keras_resnest.create_model` (see `port`).
    """
    from keras_resnest.weights import reference

    torch_model = reference.build_randomized(name, seed=seed, **(torch_kwargs or {}))
    return torch_model, port(name, torch_model, **create_kwargs)


def natural_image(height, width, seed):
    """A smooth RGB uint8 image with some texture (not white noise)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 6.3, 3)
    period = rng.uniform(5, 20, 3)
    channels = [
        128 + 90 * np.sin(cols / period[0] + phase[0]),
        128 + 90 * np.cos(rows / period[1] + phase[1]),
        128 + 90 * np.sin((rows + cols) / period[2] + phase[2]),
    ]
    image = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image, image_format, **options):
    """`image` (uint8 HWC) as the bytes of an image file; options go to PIL's `save`."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, image_format, **options)
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def small_model():
    """ResNeSt-14d at 64 px with the official random init and random BN state (1000 classes)."""
    _, model = ported_reference("resnest14d", seed=3, classifier_activation="softmax",
                                input_shape=(SMALL_SIZE, SMALL_SIZE, 3))
    return model


@functools.lru_cache(maxsize=None)
def digits_split():
    """(train_images, train_labels, test_images, test_labels); images RGB 0..255, 32x32."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scale = DIGIT_SIZE // digits.images.shape[1]
    images = digits.images.astype(np.float32) * (255.0 / 16.0)
    images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
    images = np.repeat(images[..., None], 3, axis=-1).round()
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], digits.target[order]
    split = int(0.8 * len(images))
    return images[:split], labels[:split], images[split:], labels[split:]


@functools.lru_cache(maxsize=None)
def digits_model():
    """ResNeSt-14d (32 px, 10 classes) trained 4 epochs on the digits of `digits_split`."""
    import keras

    import keras_resnest

    train_images, train_labels, _, _ = digits_split()
    keras.utils.set_random_seed(0)
    model = keras_resnest.create_model(
        "resnest14d", weights=None, input_shape=(DIGIT_SIZE, DIGIT_SIZE, 3), classes=10,
        name="digits")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, batch_size=64, epochs=4, verbose=0)
    return model


# The vector instruction sets TensorFlow's and XLA's CPU kernels care about: every speed
# figure names the host's (an AVX2-only and an AVX-512 host give different tables).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
             "amx_tile")


def host_cpu_flags():
    """The vector instruction sets of this CPU that TensorFlow's kernels care about."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return " ".join(flag for flag in CPU_FLAGS if flag in flags) or "none of " + ", ".join(
        CPU_FLAGS)


def run_measured(command, cwd=ROOT):
    """Run `command` to its end: (its own peak resident memory in MB, seconds, stderr text).

    Raises SystemExit with the end of its stderr if it fails.
    """
    import os
    import subprocess
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr,
                                 text=True)
        # os.wait4 gives this child's own peak RSS (RUSAGE_CHILDREN: the largest child so far).
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        stderr.seek(0)
        text = stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(str, command[:6]))} ... failed: {text[-2000:]}")
    return usage.ru_maxrss / 1024, seconds, text


def png_file(height, width, seed=0):
    """An RGB PNG of uniform noise (what the memory benchmarks read)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def png_bomb(side):
    """A valid 8-bit grey PNG of side x side black pixels: a few hundred kilobytes of zlib.
    (tests/helpers/odd_images.py makes the same file; benchmarks and tests share no code.)"""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))
