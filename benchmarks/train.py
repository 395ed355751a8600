"""Training throughput: the step of `keras-resnest train` vs the official PyTorch ResNeSt, same run.

Every side does a full step (forward in training mode, label-smoothed cross-entropy, backward,
SGD with momentum 0.9 and weight decay 1e-4) on the same random batch (default 16 images of
224x224), with the same number of threads, each in its own process (KERAS_BACKEND is read once,
at `import keras`). The sides take turns in interleaved rounds (the order alternates, so a
shared machine's drift hits them alike); the table gives the median images/s (range), the ratio
to the official model, and the share of this machine's float32 GEMM ceiling.

Sides:
* `tensorflow`: the step `keras-resnest train` runs (`training/run.py`, `strategy.run` under
  the default strategy), with TensorFlow's fused BatchNorm op and momentum kernel;
* `tensorflow-keras-ops`: the same step with Keras' own BatchNorm and SGD update ops
  (`backend_paths.unfused_training`), the step before the fused one;
* `tensorflow-xla`: the step of `keras-resnest train --jit-compile`;
* `jax`, `torch` (with `--keras-backends`): `model.train_on_batch` under those Keras backends,
  same optimizer and loss (XLA-compiled under JAX, eager under PyTorch);
* `official`: the official model in eager PyTorch with `torch.optim.SGD`.

The GEMM ceiling: the multiply-accumulates of a training step are counted from the traced
TensorFlow step (forward convolutions and matrix products, and their input and weight
gradients); at the best float32 matrix-multiply rate of this machine, measured in the same run
(`benchmarks.inference.gemm_peak_gflops`), that arithmetic takes a time no exact float32 step
can beat.

`--profile` prints instead where the TensorFlow step spends its time, by part of the step and
kind of op (TensorFlow's profiler, one step after warm-up), for the step with Keras ops and
the fused one side by side.

    python -m benchmarks.train [--model resnest50] [--size 224] [--batch 16] [--threads 2]
        [--steps 3] [--rounds 3] [--sides tensorflow tensorflow-keras-ops tensorflow-xla]
        [--keras-backends jax torch] [--profile]
"""

import argparse
import collections
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, host_cpu_flags
from benchmarks.inference import gemm_peak_gflops, multiply_accumulates

TENSORFLOW_SIDES = ("tensorflow", "tensorflow-keras-ops", "tensorflow-xla")
KERAS_BACKENDS = ("jax", "torch")
SIDE_NAMES = {
    "tensorflow": "keras tensorflow (fused ops)",
    "tensorflow-keras-ops": "keras tensorflow, Keras ops",
    "tensorflow-xla": "keras tensorflow + XLA",
    "jax": "keras jax (XLA)",
    "torch": "keras torch (eager)",
    "official": "official torch (eager)",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--sides", nargs="*", default=list(TENSORFLOW_SIDES),
                        choices=TENSORFLOW_SIDES, help="the TensorFlow steps to time")
    parser.add_argument("--keras-backends", nargs="*", default=[], choices=KERAS_BACKENDS,
                        help="also time keras_resnest under these Keras backends")
    parser.add_argument("--profile", action="store_true",
                        help="print where the TensorFlow step spends its time instead")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def random_batch(args):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    return images, rng.integers(0, 1000, args.batch)


def keras_step_fn(args, images, labels, side="tensorflow"):
    """(step, traced step function and its iterator) of `keras-resnest train`'s step."""
    import keras
    import tensorflow as tf

    from keras_resnest.layers import backend_paths
    from keras_resnest.training import finetune, recipe
    from keras_resnest.training.run import make_train_step

    model = finetune.build_classifier(
        args.model, num_classes=1000, image_size=args.size, weights=None
    )
    optimizer = recipe.build_optimizer(model, learning_rate=0.1, weight_decay=1e-4, momentum=0.9)
    loss_fn = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1, reduction=None
    )
    strategy = tf.distribute.get_strategy()
    train_step = make_train_step(strategy, model, optimizer, loss_fn, args.batch,
                                 jit_compile=side == "tensorflow-xla")
    one_hot = tf.one_hot(labels, 1000)
    iterator = iter(tf.data.Dataset.from_tensors((tf.constant(images), one_hot)).repeat())
    # The context decides the BatchNorm ops when the step is traced, at its first call.
    unfused = side == "tensorflow-keras-ops"
    with backend_paths.unfused_training() if unfused else contextlib.nullcontext():
        train_step(iterator)
    return (lambda: float(train_step(iterator)[0])), (train_step, iterator)


def backend_step_fn(args, images, labels):
    """keras_resnest's training step under the current Keras backend (not TensorFlow)."""
    import keras
    import numpy as np

    import keras_resnest
    from keras_resnest.training import recipe

    # The classifier of `finetune.build_classifier` (logits), less its TensorFlow-only
    # "last gamma" initialisation, which changes no work per step.
    model = keras_resnest.create_model(args.model, weights=None, classifier_activation=None,
                                       input_shape=(args.size, args.size, 3))
    optimizer = recipe.build_optimizer(model, learning_rate=0.1, weight_decay=1e-4, momentum=0.9)
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1))
    one_hot = np.eye(1000, dtype="float32")[labels]
    return lambda: float(np.asarray(model.train_on_batch(images, one_hot)))


def torch_step_fn(args, images, labels):
    import torch

    from keras_resnest.weights.reference import build_reference, to_torch_input

    model = build_reference(args.model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = to_torch_input(images)
    y = torch.from_numpy(labels.astype("int64"))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def set_tensorflow_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def worker(args):
    """One side (args.worker), driven over stdin.

    Prints READY once its step is built and warm (the TensorFlow step first prints MACS, the
    multiply-accumulates of one step), then for every "go" line times --steps steps and prints
    their images/s.
    """
    import torch

    torch.set_num_threads(args.threads)
    if args.worker in TENSORFLOW_SIDES:
        set_tensorflow_threads(args.threads)
    images, labels = random_batch(args)
    if args.worker == "official":
        step = torch_step_fn(args, images, labels)
    elif args.worker in TENSORFLOW_SIDES:
        step, (train_step, iterator) = keras_step_fn(args, images, labels, args.worker)
        if args.worker == "tensorflow":
            step_macs = multiply_accumulates(train_step.get_concrete_function(iterator))
            print(f"MACS {step_macs}", flush=True)
    else:
        step = backend_step_fn(args, images, labels)
    for _ in range(2):
        step()
    print("READY", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        print(f"SPEED {args.steps * args.batch / (time.perf_counter() - start)}", flush=True)


def start_worker(args, side):
    command = [sys.executable, "-m", "benchmarks.train", "--worker", side, "--model", args.model,
               "--size", str(args.size), "--batch", str(args.batch),
               "--threads", str(args.threads), "--steps", str(args.steps)]
    backend = {"official": "torch", **{s: "tensorflow" for s in TENSORFLOW_SIDES}}.get(side, side)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), KERAS_BACKEND=backend,
               TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process


def expect(process, side, word):
    """The rest of the worker's next line starting with `word`; exits when it ended instead."""
    for line in process.stdout:
        if line.startswith(word):
            return line[len(word):].strip()
    raise SystemExit(f"train worker {side} failed:\n{process.stderr.read()[-3000:]}")


def speed_table(args):
    """Every side in its own process, one after the other in alternating order per round."""
    set_tensorflow_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    peak = gemm_peak_gflops()
    sides = list(args.sides) + list(args.keras_backends) + ["official"]
    speeds = {side: [] for side in sides}
    macs = None
    # Started one at a time and kept idle between their turns: each side gets the CPU alone.
    processes = {}
    try:
        for side in sides:
            processes[side] = start_worker(args, side)
            if side == "tensorflow":
                macs = int(expect(processes[side], side, "MACS"))
            expect(processes[side], side, "READY")
        for round_index in range(args.rounds):
            for side in sides if round_index % 2 == 0 else sides[::-1]:
                processes[side].stdin.write("go\n")
                processes[side].stdin.flush()
                speeds[side].append(float(expect(processes[side], side, "SPEED")))
    finally:
        for process in processes.values():
            process.stdin.close()
            process.wait(timeout=120)
    reference = statistics.median(speeds["official"])
    print(f"{args.model} training step at {args.size}x{args.size}, batch {args.batch}, "
          f"{args.threads} threads; median images/s of {args.rounds} interleaved rounds of "
          f"{args.steps} steps (range)")
    print(f"host CPU flags: {host_cpu_flags()}; {os.cpu_count()} CPUs")
    ceiling = None
    if macs:
        ceiling = peak * 1e9 / (2 * macs / args.batch)
        print(f"{macs / args.batch / 1e9:.2f} G multiply-accumulates per image and step; best "
              f"float32 GEMM of this machine {peak:.0f} GFLOP/s -> ceiling {ceiling:.2f} "
              "images/s")
    print(f"{'side':<30}{'images/s (range)':>22}{'ratio to official':>19}{'% of GEMM':>11}")
    for side in sides:
        median = statistics.median(speeds[side])
        cell = f"{median:.2f} ({min(speeds[side]):.2f}-{max(speeds[side]):.2f})"
        share = f"{100 * median / ceiling:.0f}%" if ceiling else "-"
        print(f"{SIDE_NAMES[side]:<30}{cell:>22}{median / reference:>18.2f}x{share:>11}",
              flush=True)


def step_part(name, optimizer_scope):
    """forward, backward or optimizer, from a profiled op's name."""
    if name.startswith("gradient_tape/"):
        return "backward"
    if name.startswith(optimizer_scope) or "/" not in name:
        return "optimizer"
    return "forward"


def op_kind(name, op_type):
    """The kind of work of a profiled op, from its type and the layer names in its name."""
    layers = name.split("/")
    if "Conv2DBackpropInput" in op_type:
        return "convolution, input gradient"
    if "Conv2DBackpropFilter" in op_type:
        return "convolution, weight gradient"
    if "Conv2D" in op_type or "MatMul" in op_type:
        return "convolution / matmul"
    if "BatchNorm" in op_type or any(
            layer.startswith(("bn", "downsample_bn", "batchnorm", "moments")) for layer in layers):
        return "batch norm"
    if op_type in ("ConcatV2", "Split", "SplitV", "Slice", "StridedSlice", "StridedSliceGrad",
                   "Pad", "Transpose", "_MklTranspose", "Reshape", "Identity"):
        return "concat / split / pad / copy"
    if any(layer.startswith("conv2") for layer in layers):  # the split-attention block's rest
        return "split attention (pool, fc, softmax, weighting)"
    return "other (ReLU, pooling, residual, loss)"


def profile_step(train_step, iterator, logdir):
    """{(part, kind): seconds} of one call of `train_step`, from TensorFlow's profiler."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(str(logdir))
    train_step(iterator)[0].numpy()
    tf.profiler.experimental.stop()
    xspace = xplane_pb2.XSpace()
    xspace.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    times = collections.Counter()
    for plane in xspace.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's op kernels
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                name, _, op_type = label.rpartition(":")
                if not name or "::" in label:  # executor bookkeeping, not an op
                    continue
                part = step_part(name, "coupled_weight_decay_sgd")
                kind = "variable updates" if part == "optimizer" else op_kind(name, op_type)
                times[part, kind] += event.duration_ps * 1e-12
    return times


def profile_table(args):
    """Where the TensorFlow step spends its time: with Keras ops and fused."""
    set_tensorflow_threads(args.threads)
    images, labels = random_batch(args)
    variants = ("tensorflow-keras-ops", "tensorflow")
    profiles = {}
    for variant in variants:
        step, (train_step, iterator) = keras_step_fn(args, images, labels, variant)
        step()
        with tempfile.TemporaryDirectory() as logdir:
            profiles[variant] = profile_step(train_step, iterator, logdir)
    keys = sorted(set().union(*profiles.values()),
                  key=lambda key: -profiles["tensorflow-keras-ops"].get(key, 0.0))
    print(f"{args.model} training step at {args.size}x{args.size}, batch {args.batch}, "
          f"{args.threads} threads: op time by part of the step and kind of op, ms per step "
          "(share of the step's op time), one profiled step after warm-up")
    print(f"host CPU flags: {host_cpu_flags()}; {os.cpu_count()} CPUs")
    totals = {variant: sum(profiles[variant].values()) for variant in variants}
    header = "".join(f"{SIDE_NAMES[v]:>30}" for v in variants)
    print(f"{'part':<10}{'kind':<48}{header}")
    for part in ("forward", "backward", "optimizer"):
        for key in [key for key in keys if key[0] == part]:
            seconds = [profiles[v].get(key, 0.0) for v in variants]
            cells = "".join(f"{1e3 * time:>20.1f} ({100 * time / totals[v]:>4.1f}%)"
                            for time, v in zip(seconds, variants))
            print(f"{part:<10}{key[1]:<48}{cells}")
    cells = "".join(f"{1e3 * totals[v]:>20.1f} (100%) " for v in variants)
    print(f"{'total':<58}{cells}")


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args)
    if args.profile:
        return profile_table(args)
    return speed_table(args)


if __name__ == "__main__":
    main()
