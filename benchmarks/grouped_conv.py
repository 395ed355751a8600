"""Grouped 3x3 convolution on TensorFlow CPU: the ways to compute it, timed side by side.

The numbers behind `keras_resnest.layers.GroupedConv2D` (one conv per group): TF's native
grouped conv, the same under XLA (what `keras.layers.Conv2D(groups=...)` does on TF), and one
conv per group plus concat. Shapes are ResNeSt-50's split-attention convs (radix 2).

    python -m benchmarks.grouped_conv [--threads 2] [--batch 8]
"""
import argparse
import os
import time


def median_ms(fn, repeats=20):
    import numpy as np

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    print(f"batch {args.batch}, {args.threads} threads; median ms per call")
    print(f"{'input':>14} {'groups':>6} {'native':>8} {'XLA':>8} {'split':>8}")
    for size, channels in ((56, 64), (28, 128), (14, 256), (7, 512)):
        groups = 2
        x = tf.random.normal((args.batch, size, size, channels))
        kernel = tf.random.normal((3, 3, channels // groups, 2 * channels))
        group_kernels = tf.split(kernel, groups, axis=-1)

        def native(x):
            return tf.nn.conv2d(x, kernel, 1, "SAME")

        def split(x):
            return tf.concat([tf.nn.conv2d(part, k, 1, "SAME")
                              for part, k in zip(tf.split(x, groups, axis=-1), group_kernels)],
                             axis=-1)

        variants = [tf.function(native), tf.function(native, jit_compile=True),
                    tf.function(split)]
        times = [median_ms(lambda f=f: f(x).numpy()) for f in variants]
        print(f"{str((size, size, channels)):>14} {groups:>6} "
              + " ".join(f"{t:>8.2f}" for t in times), flush=True)


if __name__ == "__main__":
    main()
