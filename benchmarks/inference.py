"""CPU inference speed: keras_resnest (TensorFlow) vs the official PyTorch ResNeSt, same run.

Both sides get the same threads (default 2), the same 224x224 inputs and random weights
(speed does not depend on the values). keras_resnest runs as a `tf.function` without XLA,
i.e. the graph a SavedModel / TF-Serving executes. Prints images/s and the ratio.

    python benchmarks/inference.py [--model resnest50] [--threads 2] [--batches 1 8]
"""
import argparse
import os
import sys
import time
from pathlib import Path

# The reference builder lives with the tests (torch is a test-only dependency).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="minimum timed seconds per measurement")
    parser.add_argument("--jit", action="store_true", help="also time an XLA-compiled call")
    return parser.parse_args()


def images_per_second(run, batch, seconds):
    for _ in range(3):  # warm-up: graph building, allocator, oneDNN primitive caches
        run()
    count, start = 0, time.perf_counter()
    while True:
        run()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 5:
            return count * batch / elapsed


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(args.threads)

    import keras_resnest
    from tests.torch_reference import build_reference

    model = keras_resnest.create_model(args.model, weights=None,
                                       input_shape=(args.size, args.size, 3))
    keras_call = tf.function(lambda x: model(x, training=False))
    xla_call = tf.function(lambda x: model(x, training=False), jit_compile=True)
    torch_model = build_reference(args.model).eval()

    print(f"{args.model} at {args.size}x{args.size}, {args.threads} threads, "
          f"TF {tf.__version__}, torch {torch.__version__}")
    print(f"{'batch':>5} {'keras img/s':>12} {'torch img/s':>12} {'ratio':>7}"
          + (f" {'keras+XLA':>10}" if args.jit else ""))
    for batch in args.batches:
        images = np.random.RandomState(0).uniform(0, 255, (batch, args.size, args.size, 3))
        tf_images = tf.constant(images, tf.float32)
        torch_images = torch.from_numpy(images.transpose(0, 3, 1, 2).astype("float32"))
        keras_speed = images_per_second(lambda: keras_call(tf_images).numpy(), batch,
                                        args.seconds)
        with torch.inference_mode():
            torch_speed = images_per_second(lambda: torch_model(torch_images), batch,
                                            args.seconds)
        line = f"{batch:>5} {keras_speed:>12.2f} {torch_speed:>12.2f} {keras_speed / torch_speed:>6.2f}x"
        if args.jit:
            line += f" {images_per_second(lambda: xla_call(tf_images).numpy(), batch, args.seconds):>10.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
