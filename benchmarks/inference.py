"""CPU inference speed: keras_resnest (TensorFlow) vs the official PyTorch ResNeSt, same run.

Both sides get the same threads (default 2), the same 224x224 inputs and the same weights: the
official model with its random initialisation and random BatchNorm statistics, ported into
keras_resnest (the outputs are compared, so both sides provably compute the same function).
keras_resnest runs as a `tf.function` without XLA, i.e. the graph a SavedModel / TF-Serving
executes; the official model runs in eager mode under `torch.inference_mode()`.

Timing is robust to a shared machine whose speed drifts: the two sides alternate in rounds
(keras then torch, then torch then keras, ...), each round gives a ratio, and the median ratio
is reported with its range. TensorFlow's and PyTorch's worker threads spin for a while after
each call, so every block starts with untimed warm-up calls.

It also prints the arithmetic each side achieves (multiply-accumulates of the convolutions and
the classifier, counted from the graph) against the best float32 matrix-multiply rate of this
machine, measured in the same run: images/s at that rate is a ceiling no exact float32
implementation of the network's arithmetic can pass.

    python -m benchmarks.inference [--model resnest50] [--threads 2] [--batches 1 8] [--rounds 4]
        [--keras-backends jax torch]

`--runtimes all` (or some of: keras saved_model torch ort_official ort_ours openvino_official
openvino_ours tflite_fp32 tflite_int8 ort_ours_int8) then prints the table a CPU user picks a
format from: every runtime in its own process, the same weights, interleaved rounds, images/s
at each batch size and the ratio to the official ONNX file in onnxruntime
(`benchmarks/runtimes.py`).

`--keras-backends jax torch` then prints one table of every backend: keras_resnest under Keras'
JAX backend (`predict_on_batch`: an XLA-compiled function) and PyTorch backend (eager, and
`torch+compile`: `jit_compile=True`, which Keras runs through `torch.compile`), each backend
measured in its own process (KERAS_BACKEND is fixed at import) with the same weights, next to
the TensorFlow and official rows above, each with its ratio to the official model's median;
their parity with the official model is printed too. The grouped convolutions take each
backend's `backend_paths.grouped_conv_formulation()`.
"""
import argparse
import os
import statistics
import sys
import time

from benchmarks.common import ROOT, host_cpu_flags, images_per_second, ported_reference


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating keras/torch rounds per batch size")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="minimum timed seconds per side per round")
    parser.add_argument("--jit", action="store_true", help="also time an XLA-compiled call")
    parser.add_argument("--keras-backends", nargs="*", default=[], choices=["jax", "torch"],
                        help="also time keras_resnest under these Keras backends")
    parser.add_argument(
        "--runtimes",
        nargs="*",
        default=[],
        help="also time these runtimes, each in its own process ('all' for every one)",
    )
    parser.add_argument("--backend-worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def same_weights_models(name, size):
    """The official model (random init, random BN state) and keras_resnest with its weights.

    Logits on both sides (the official model has no softmax); keras_resnest still does its
    in-graph ImageNet normalisation, which the torch side is not timed for.
    """
    return ported_reference(name, input_shape=(size, size, 3))


def backend_worker(args):
    """Under KERAS_BACKEND=args.backend_worker: parity and images/s, one JSON line per way of
    calling the model (`predict_on_batch`; on PyTorch also with `jit_compile=True`, which
    Keras runs through `torch.compile`)."""
    import json

    import keras
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from keras_resnest.weights.reference import logits, relative_error

    torch_model, model = same_weights_models(args.model, args.size)
    check = np.random.RandomState(1).uniform(0, 255, (2, args.size, args.size, 3)).astype("float32")
    backend = keras.backend.backend()
    variants = [(backend, model)]
    if backend == "torch":
        compiled = keras.models.clone_model(model)
        compiled.set_weights(model.get_weights())
        compiled.compile(jit_compile=True)
        variants.append(("torch+compile", compiled))
    for name, variant in variants:
        result = {
            "backend": name,
            "parity": relative_error(variant.predict_on_batch(check), logits(torch_model, check)),
            "speeds": {},
        }
        for batch in args.batches:
            images = np.random.RandomState(0).uniform(0, 255, (batch, args.size, args.size, 3))
            images = images.astype("float32")
            speeds = [
                images_per_second(lambda: variant.predict_on_batch(images), batch, args.seconds)
                for _ in range(args.rounds)
            ]
            result["speeds"][str(batch)] = [min(speeds), statistics.median(speeds), max(speeds)]
        print("RESULT " + json.dumps(result), flush=True)


def other_backend_rows(args, reference_rows):
    """keras_resnest under each of `args.keras_backends`, one process each, in one table.

    Args:
        reference_rows: dict. {batch: (keras TensorFlow img/s, official torch img/s)} of the
            interleaved rounds above.
    """
    import json
    import subprocess

    rows = {batch: [("tensorflow (tf.function)", reference_rows[batch][0])]
            for batch in args.batches}
    for backend in args.keras_backends:
        command = [
            sys.executable,
            "-m",
            "benchmarks.inference",
            "--backend-worker",
            backend,
            "--model",
            args.model,
            "--threads",
            str(args.threads),
            "--size",
            str(args.size),
            "--rounds",
            str(args.rounds),
            "--seconds",
            str(args.seconds),
            "--batches",
            *map(str, args.batches),
        ]
        env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS=str(args.threads))
        process = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
        if process.returncode or not lines:
            print(f"keras backend {backend}: failed\n{process.stderr[-3000:]}", flush=True)
            continue
        for line in lines:
            result = json.loads(line[len("RESULT "):])
            name = result["backend"]
            print(f"keras backend {name}: max|keras - torch| / max|torch| = "
                  f"{result['parity']:.1e}", flush=True)
            for batch, (low, median, high) in result["speeds"].items():
                print(f"{batch:>5} {name + ' img/s':>12} {median:>10.2f} ({low:.2f}-{high:.2f})",
                      flush=True)
                rows[int(batch)].append((name, median))
    if not args.keras_backends:
        return
    print("\nkeras_resnest per Keras backend, median images/s; ratio to the official model "
          "(eager torch) of the rounds above")
    print(f"{'batch':>5} {'backend':<26}{'img/s':>8}{'ratio':>8}")
    for batch in args.batches:
        official = reference_rows[batch][1]
        for backend, speed in rows[batch] + [("official torch (eager)", official)]:
            print(f"{batch:>5} {backend:<26}{speed:>8.2f}{speed / official:>7.2f}x", flush=True)


def multiply_accumulates(concrete_function):
    """Multiply-accumulates of the convolutions and matrix products of a traced graph, per
    call: forward ops, and in a training step also their input and weight gradients."""
    total = 0
    for op in concrete_function.graph.get_operations():
        if op.type == "Conv2D":
            kernel = op.inputs[1].shape
            total += op.outputs[0].shape.num_elements() * kernel[0] * kernel[1] * kernel[2]
        elif op.type == "Conv2DBackpropInput":  # (input_sizes, filter, out_backprop)
            kernel = op.inputs[1].shape
            total += op.inputs[2].shape.num_elements() * kernel[0] * kernel[1] * kernel[2]
        elif op.type == "Conv2DBackpropFilter":  # (input, filter_sizes, out_backprop)
            kernel = op.outputs[0].shape
            total += op.inputs[2].shape.num_elements() * kernel[0] * kernel[1] * kernel[2]
        elif op.type == "MatMul":
            a = op.inputs[0].shape
            inner = a[-2] if op.get_attr("transpose_a") else a[-1]
            total += op.outputs[0].shape.num_elements() * inner
    return total


def gemm_peak_gflops(size=3072, repeats=5):
    """Best float32 GEMM rate of this machine (TensorFlow and PyTorch, whichever is faster)."""
    import tensorflow as tf
    import torch

    a, b = tf.random.normal((size, size)), tf.random.normal((size, size))
    tf_matmul = tf.function(lambda: tf.matmul(a, b))
    ta, tb = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for run in (lambda: tf_matmul().numpy(), lambda: ta @ tb):
        run()
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.backend_worker:
        return backend_worker(args)
    import numpy as np
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(args.threads)

    from keras_resnest.weights.reference import logits, relative_error

    torch_model, model = same_weights_models(args.model, args.size)
    keras_call = tf.function(lambda x: model(x, training=False))
    xla_call = tf.function(lambda x: model(x, training=False), jit_compile=True)

    check = np.random.RandomState(1).uniform(0, 255, (2, args.size, args.size, 3)).astype("float32")
    parity = relative_error(keras_call(tf.constant(check)).numpy(), logits(torch_model, check))
    image_macs = multiply_accumulates(
        keras_call.get_concrete_function(tf.TensorSpec((1, args.size, args.size, 3)))
    )
    peak = gemm_peak_gflops()
    ceiling = peak * 1e9 / (2 * image_macs)

    print(
        f"{args.model} at {args.size}x{args.size}, {args.threads} threads, "
        f"TF {tf.__version__}, torch {torch.__version__}"
    )
    print(f"host CPU flags: {host_cpu_flags()}; {os.cpu_count()} CPUs")
    print(f"same weights on both sides: max|keras - torch| / max|torch| = {parity:.1e}")
    print(
        f"{image_macs / 1e9:.2f} G multiply-accumulates per image; best float32 GEMM of this "
        f"machine {peak:.0f} GFLOP/s -> ceiling {ceiling:.1f} images/s"
    )
    print(
        f"{'batch':>5} {'keras img/s':>12} {'torch img/s':>12} {'ratio (range)':>21} "
        f"{'keras % of GEMM':>16} {'ceiling/torch':>14}"
        + (f" {'keras+XLA':>10}" if args.jit else "")
    )
    reference_rows = {}
    for batch in args.batches:
        images = np.random.RandomState(0).uniform(0, 255, (batch, args.size, args.size, 3))
        tf_images = tf.constant(images, tf.float32)
        torch_images = torch.from_numpy(images.transpose(0, 3, 1, 2).astype("float32"))

        def run_keras():
            return keras_call(tf_images).numpy()

        def run_torch():
            with torch.inference_mode():
                return torch_model(torch_images)

        keras_speeds, torch_speeds = [], []
        for round_index in range(args.rounds):
            sides = [(run_keras, keras_speeds), (run_torch, torch_speeds)]
            for run, speeds in sides[:: 1 if round_index % 2 == 0 else -1]:
                speeds.append(images_per_second(run, batch, args.seconds))
        ratios = [k / t for k, t in zip(keras_speeds, torch_speeds)]
        keras_speed, torch_speed = statistics.median(keras_speeds), statistics.median(torch_speeds)
        reference_rows[batch] = (keras_speed, torch_speed)
        line = (
            f"{batch:>5} {keras_speed:>12.2f} {torch_speed:>12.2f} "
            f"{statistics.median(ratios):>6.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x) "
            f"{100 * keras_speed / ceiling:>15.0f}% {ceiling / torch_speed:>13.2f}x"
        )
        if args.jit:
            jit_rate = images_per_second(lambda: xla_call(tf_images).numpy(), batch, args.seconds)
            line += f" {jit_rate:>10.2f}"
        print(line, flush=True)
    other_backend_rows(args, reference_rows)
    if args.runtimes:
        runtime_table(args, torch_model, model, keras_call)


def runtime_table(args, torch_model, model, keras_call):
    """Every runtime of benchmarks.runtimes in its own process: speed, ratio, parity."""
    import tempfile

    import numpy as np

    from benchmarks import runtimes as rt

    names = list(rt.RUNTIMES) if args.runtimes == ["all"] else args.runtimes
    unknown = sorted(set(names) - set(rt.RUNTIMES))
    if unknown:
        raise SystemExit(
            f"unknown runtimes {unknown}; expected 'all' or some of {list(rt.RUNTIMES)}"
        )
    with tempfile.TemporaryDirectory(prefix="keras_resnest_bench_") as directory:
        rt.write_artifacts(directory, args.model, args.size, torch_model, model, names)
        check = np.random.RandomState(1).uniform(0, 255, (2, args.size, args.size, 3))
        check = check.astype("float32")
        np.save(os.path.join(directory, "check_images.npy"), check)
        keras_logits = keras_call(check).numpy()
        keras_probabilities = np.exp(keras_logits - keras_logits.max(-1, keepdims=True))
        keras_probabilities /= keras_probabilities.sum(-1, keepdims=True)
        workers = {}
        try:
            for name in names:
                print(f"starting {name}...", flush=True)
                workers[name] = rt.Worker(name, directory, args.threads)
            speeds = {name: {batch: [] for batch in args.batches} for name in names}
            for round_index in range(args.rounds):
                order = names if round_index % 2 == 0 else names[::-1]
                for batch in args.batches:
                    for name in order:
                        speed = workers[name].images_per_second(batch, args.seconds)
                        if speed is not None:
                            speeds[name][batch].append(speed)
        finally:
            for worker in workers.values():
                worker.close()

    def median(name, batch):
        values = speeds.get(name, {}).get(batch, [])
        return statistics.median(values) if values else None

    print(
        f"\n{args.model} {args.size}x{args.size}, {args.threads} threads, median images/s of "
        f"{args.rounds} interleaved rounds (range); ratio to {rt.REFERENCE} "
        f"({rt.RUNTIMES[rt.REFERENCE]}); parity: max|difference| / max|keras| on 2 images"
    )
    header = "".join(f"{f'batch {b} img/s (range)':>26}{'ratio':>7}" for b in args.batches)
    print(f"{'runtime':<19}{header}{'parity':>10}  description")
    for name in names:
        cells = ""
        for batch in args.batches:
            values = speeds[name][batch]
            if not values:
                cells += f"{'-':>26}{'':>7}"
                continue
            reference = median(rt.REFERENCE, batch)
            ratio = f"{median(name, batch) / reference:.2f}x" if reference else ""
            cells += f"{median(name, batch):.1f} ({min(values):.1f}-{max(values):.1f})".rjust(26)
            cells += f"{ratio:>7}"
        expected = (
            keras_probabilities if workers[name].output_kind == "probabilities" else keras_logits
        )
        parity = np.abs(workers[name].outputs - expected).max() / np.abs(expected).max()
        print(f"{name:<19}{cells}{parity:>10.1e}  {rt.RUNTIMES[name]}", flush=True)


if __name__ == "__main__":
    main()
