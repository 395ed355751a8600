"""Short runs of `keras-resnest train`'s step, for the tests that hold two ways of computing it
(plain and XLA, fused and Keras' own BatchNorm) to the same numbers."""
import keras
import numpy as np
import tensorflow as tf

from keras_resnest.training import finetune, recipe
from keras_resnest.training.run import make_train_step

BATCH, CLASSES, STEPS = 4, 10, 3


def batch(size, count=BATCH):
    """`count` random images of `size` x `size` and their one-hot labels, always the same."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (count, size, size, 3)).astype("float32")
    labels = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, count)]
    return images, labels


def update_error(before, after_a, after_b):
    """max |update_b - update_a| / max |update_a| over all variables.

    Against the largest update of the model: a variable whose exact gradient is zero (the bias
    of fc1, which a BatchNorm follows) gets rounding noise of 1e-13 on both sides, which no
    per-variable relative tolerance can hold.
    """
    updates_a = [a - b for a, b in zip(after_a, before)]
    updates_b = [a - b for a, b in zip(after_b, before)]
    largest = max(float(np.abs(u).max()) for u in updates_a)
    return max(float(np.abs(u - v).max()) for u, v in zip(updates_a, updates_b)) / largest


def train_step_run(size, jit_compile=False, model_name="resnest14d", **model_options):
    """(losses, initial weights, final weights, op types) of STEPS steps of the step of
    `keras-resnest train` on `batch(size)`, from the weights of seed 0, at learning rate 0.01.

    The op types are those of the traced step, its nested functions included.
    """
    keras.utils.set_random_seed(0)
    model = finetune.build_classifier(model_name, num_classes=CLASSES, image_size=size,
                                      weights=None, **model_options)
    optimizer = recipe.build_optimizer(model, learning_rate=0.01, weight_decay=1e-4,
                                       momentum=0.9)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1,
                                                   reduction=None)
    step = make_train_step(tf.distribute.get_strategy(), model, optimizer, loss_fn, BATCH,
                           jit_compile=jit_compile)
    iterator = iter(tf.data.Dataset.from_tensors(batch(size)).repeat())
    before = [v.numpy() for v in model.weights]
    losses = [float(step(iterator)[0]) for _ in range(STEPS)]
    graph_def = step.get_concrete_function(iterator).graph.as_graph_def()
    op_types = {node.op for node in graph_def.node}
    op_types.update(node.op for function in graph_def.library.function
                    for node in function.node_def)
    return np.array(losses), before, [v.numpy() for v in model.weights], op_types
