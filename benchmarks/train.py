"""Training throughput: a training step of keras_resnest vs the official PyTorch ResNeSt, same run.

Both sides do a full step (forward in training mode, label-smoothed cross-entropy, backward,
SGD with momentum 0.9 and weight decay 1e-4) on the same random 224x224 batch of 16, with the
same number of threads. The keras side is the very step `keras-resnest train` runs
(`training/run.py`, `strategy.run` under the default strategy, no XLA). Prints images/s and
the ratio keras / torch.

    python -m benchmarks.train [--model resnest50] [--size 224] [--batch 16] [--threads 2]
        [--steps 5]
"""

import argparse
import os

from benchmarks.common import images_per_second


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per side (after 2 warm-up steps)"
    )
    return parser.parse_args()


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
