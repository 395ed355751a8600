"""Grouped convolution on CPU: each formulation under each Keras backend, timed side by side.

The measurement behind `keras_resnest.layers.backend_paths.grouped_conv_formulation()`:
for every backend (each in its own process: KERAS_BACKEND is read once, at `import keras`),
`GroupedConv2D` computed as one convolution per group plus a concat ("per_group") and as one
native grouped convolution ("native": `groups=` / `feature_group_count`), in interleaved
rounds. The shapes are ResNeSt-50's split-attention convolutions (3x3, radix 2); `--model`
also times a whole model's `predict_on_batch` with each formulation. The call is the one a
user makes: `predict_on_batch` (a tf.function under TensorFlow, XLA-compiled under JAX, eager
under PyTorch). Prints the median time per call and the ratio native / per_group (above 1:
per_group is faster).

    python -m benchmarks.grouped_conv [--threads 2] [--batch 8] [--rounds 3]
        [--backends tensorflow jax torch] [--model resnest50] [--size 224]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import ROOT, host_cpu_flags

BACKENDS = ("tensorflow", "jax", "torch")
# (height = width, input channels, groups) of ResNeSt-50's split-attention 3x3 convolutions.
SHAPES = ((56, 64, 2), (28, 128, 2), (14, 256, 2), (7, 512, 2))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per round")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--model", help="also time this model's predict_on_batch")
    parser.add_argument("--size", type=int, default=224, help="input side of --model")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def median_ms(run, calls):
    """Median milliseconds of `calls` calls of `run`, after one untimed call."""
    run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def predict_runners(make_model, inputs):
    """{formulation: run()}: predict_on_batch of one model per formulation, same weights.

    Each model's predict function is traced (first call) under its formulation.
    """
    from keras_resnest.layers.backend_paths import (
        GROUPED_CONV_FORMULATIONS,
        grouped_conv_formulation_override,
    )

    first = make_model()
    runners = {}
    for formulation in GROUPED_CONV_FORMULATIONS:
        model = make_model()
        model.set_weights(first.get_weights())
        with grouped_conv_formulation_override(formulation):
            model.predict_on_batch(inputs)

        def run(model=model, formulation=formulation):
            # The override stays on: the eager PyTorch backend traces nothing.
            with grouped_conv_formulation_override(formulation):
                return model.predict_on_batch(inputs)

        runners[formulation] = run
    return runners


def time_interleaved(runners, rounds, calls):
    """{formulation: median ms over rounds}, the formulations alternating in order."""
    times = {name: [] for name in runners}
    names = list(runners)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            times[name].append(median_ms(runners[name], calls))
    return {name: statistics.median(values) for name, values in times.items()}


def worker(args):
    """Under KERAS_BACKEND=args.worker: one JSON line of {case: {formulation: ms}}."""
    import keras
    import numpy as np

    if args.worker == "torch":
        import torch

        torch.set_num_threads(args.threads)
    from keras_resnest.layers import GroupedConv2D

    rng = np.random.default_rng(0)
    results = {}
    for size, channels, groups in SHAPES:
        inputs = rng.standard_normal((args.batch, size, size, channels)).astype("float32")

        def make_model(channels=channels, groups=groups, size=size):
            layer_input = keras.Input((size, size, channels))
            conv = GroupedConv2D(2 * channels, 3, padding=1, groups=groups)
            return keras.Model(layer_input, conv(layer_input))

        results[f"{size}x{size}x{channels} g{groups}"] = time_interleaved(
            predict_runners(make_model, inputs), args.rounds, args.calls)
    if args.model:
        import keras_resnest

        images = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")

        def make_model():
            keras.utils.set_random_seed(0)
            return keras_resnest.create_model(args.model, weights=None,
                                              input_shape=(args.size, args.size, 3))

        results[f"{args.model} {args.size}px"] = time_interleaved(
            predict_runners(make_model, images), args.rounds, max(1, args.calls // 2))
    print("RESULT " + json.dumps(results), flush=True)


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args)
    from keras_resnest.layers.backend_paths import GROUPED_CONV_FORMULATIONS

    print(f"grouped convolution, batch {args.batch}, {args.threads} threads; median ms per "
          f"predict_on_batch call of {args.rounds} interleaved rounds")
    print(f"host CPU flags: {host_cpu_flags()}; {os.cpu_count()} CPUs")
    print(f"{'backend':<11}{'case':<24}"
          + "".join(f"{name:>11}" for name in GROUPED_CONV_FORMULATIONS)
          + f"{'native/per_group':>18}")
    for backend in args.backends:
        command = [sys.executable, "-m", "benchmarks.grouped_conv", "--worker", backend,
                   "--threads", str(args.threads), "--batch", str(args.batch),
                   "--rounds", str(args.rounds), "--calls", str(args.calls),
                   "--size", str(args.size)] + (["--model", args.model] if args.model else [])
        env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS=str(args.threads))
        process = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
        if process.returncode or not lines:
            raise SystemExit(f"{backend} worker failed:\n{process.stderr[-3000:]}")
        for case, times in json.loads(lines[-1][len("RESULT "):]).items():
            print(f"{backend:<11}{case:<24}"
                  + "".join(f"{times[name]:>11.2f}" for name in GROUPED_CONV_FORMULATIONS)
                  + f"{times['native'] / times['per_group']:>17.2f}x", flush=True)


if __name__ == "__main__":
    main()
