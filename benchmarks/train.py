"""Training throughput: a training step of keras_resnest vs the official PyTorch ResNeSt, same run.

Both sides do a full step (forward in training mode, label-smoothed cross-entropy, backward,
SGD with momentum 0.9 and weight decay 1e-4) on the same random 224x224 batch of 16, with the
same number of threads. The keras side is the very step `keras-resnest train` runs
(`training/run.py`, `strategy.run` under the default strategy, no XLA). Prints images/s and
the ratio keras / torch.

`--keras-backends tensorflow jax torch` times instead keras_resnest's step under each of those
Keras backends and the official model, each side in its own process (KERAS_BACKEND is read
once, at `import keras`), in interleaved rounds (the sides alternate, so a shared machine's
drift hits them alike); it prints the median images/s (range) and the ratio to the official
model. Under TensorFlow the step is `keras-resnest train`'s, as above; under JAX and PyTorch it
is `model.train_on_batch` with the same optimizer and loss (XLA-compiled under JAX, eager
under PyTorch).

    python -m benchmarks.train [--model resnest50] [--size 224] [--batch 16] [--threads 2]
        [--steps 5] [--keras-backends tensorflow jax torch] [--rounds 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import ROOT, host_cpu_flags, images_per_second

KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per side (after 2 warm-up steps)"
    )
    parser.add_argument("--keras-backends", nargs="*", default=[], choices=KERAS_BACKENDS,
                        help="time keras_resnest under these Keras backends, one process each")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of --steps steps per side (--keras-backends)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


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


def worker(args):
    """One side (args.worker: a Keras backend or "official"), driven over stdin.

    Prints READY once its step is built and warm, then for every "go" line times --steps steps
    and prints their images/s.
    """
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    if args.worker == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    labels = rng.integers(0, 1000, args.batch)
    if args.worker == "official":
        step = torch_step_fn(args, images, labels)
    elif args.worker == "tensorflow":
        step = keras_step_fn(args, images, labels)
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
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               KERAS_BACKEND="torch" if side == "official" else side)
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    expect(process, side, "READY")
    return process


def expect(process, side, word):
    """The rest of the worker's next line starting with `word`; exits when it ended instead."""
    for line in process.stdout:
        if line.startswith(word):
            return line[len(word):].strip()
    raise SystemExit(f"train worker {side} failed:\n{process.stderr.read()[-3000:]}")


def backend_table(args):
    """Every side in its own process, one after the other in alternating order per round."""
    sides = list(args.keras_backends) + ["official"]
    speeds = {side: [] for side in sides}
    # Started one at a time and kept idle between their turns: each side gets the CPU alone.
    processes = {}
    try:
        for side in sides:
            processes[side] = start_worker(args, side)
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
    print(f"{'side':<22}{'images/s (range)':>22}{'ratio to official':>19}")
    for side in sides:
        name = "official torch (eager)" if side == "official" else f"keras {side}"
        median = statistics.median(speeds[side])
        cell = f"{median:.2f} ({min(speeds[side]):.2f}-{max(speeds[side]):.2f})"
        print(f"{name:<22}{cell:>22}{median / reference:>18.2f}x", flush=True)


def keras_step_fn(args, images, labels):
    import keras
    import tensorflow as tf

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
    train_step = make_train_step(strategy, model, optimizer, loss_fn, args.batch)
    one_hot = tf.one_hot(labels, 1000)
    iterator = iter(tf.data.Dataset.from_tensors((tf.constant(images), one_hot)).repeat())
    return lambda: float(train_step(iterator)[0])


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


def main():
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args)
    if args.keras_backends:
        return backend_table(args)
    import numpy as np
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    labels = rng.integers(0, 1000, args.batch)

    print(
        f"{args.model} training step at {args.size}x{args.size}, batch {args.batch}, "
        f"{args.threads} threads, TF {tf.__version__}, torch {torch.__version__}",
        flush=True,
    )
    # Exactly --steps timed steps per side, after the warm-up (tracing, allocator, caches).
    keras_speed = images_per_second(
        keras_step_fn(args, images, labels), args.batch, 0, min_calls=args.steps
    )
    print(f"keras_resnest : {keras_speed:8.2f} images/s", flush=True)
    torch_speed = images_per_second(
        torch_step_fn(args, images, labels), args.batch, 0, min_calls=args.steps
    )
    print(f"official torch: {torch_speed:8.2f} images/s", flush=True)
    print(f"ratio keras/torch: {keras_speed / torch_speed:.2f}x")


if __name__ == "__main__":
    main()
