"""The callbacks that drive a training run's epochs (`keras.callbacks.CallbackList`).

Keras's own callbacks write the outputs, in this order on the chief (`run_callbacks`):
`keras.callbacks.SwapEMAWeights` (with `ema_momentum`), `keras.callbacks.CSVLogger`
(`history.csv`), `keras.callbacks.TensorBoard` (`logs/`), `keras.callbacks.ModelCheckpoint`
(`best.keras`), then `BackupCheckpoint` (ours, below), then the user's callbacks. Other
workers run only the EMA swap, the backup and the user's callbacks.

The backup comes after the outputs: once it says an epoch is done, that epoch's history row
and best.keras are on disk (a run killed in between redoes the epoch, and its row is cut from
history.csv on resume). SwapEMAWeights puts the optimizer's average of the weights into the
model between the test hooks (evaluation); `PlainModelSaver` does the same around the saves of
best.keras, so the raw weights are in the model at every epoch's end, as the backup must hold
them. Keras swaps by addition and subtraction under TensorFlow (no temporary variable), so the
raw weights come back to within float rounding.

Why our own backup rather than `keras.callbacks.BackupAndRestore`: that callback resumes
through `fit` (it sets the model's initial epoch and skips batches inside `fit`'s own loop)
and saves the model's weights only, while our loop resumes a `strategy.run` step and needs
the optimizer (EMA included) and the (epoch, step) position in one `tf.train.Checkpoint`.
"""
import contextlib
import os

import keras
import tensorflow as tf

from keras_resnest.atomic_files import write_atomically, write_json
from keras_resnest.training import recipe


class BackupCheckpoint(keras.callbacks.Callback):
    """Writes the run's `tf.train.Checkpoint` every `every` steps and at each epoch's end.

    Checkpoint N is the position epoch x steps + step; `backup/progress.json` names the last
    one. Right after writing checkpoint N it calls `on_backup_saved(number, epoch, step)` on
    each callback of `listeners` that has that method, so a callback can act on a checkpoint
    that is already on disk (the tests' kill switch does).

    Args:
        manager (tf.train.CheckpointManager): Saves the checkpoint holding `position`.
        position (tf.Variable): The (epoch, step in epoch) pair that the checkpoint stores.
        steps (int): Steps per epoch.
        every (int): Steps between mid-epoch checkpoints.
        listeners (list of callbacks): Told of each checkpoint written. Defaults to none.
    """

    def __init__(self, manager, position, steps, every, listeners=()):
        super().__init__()
        self.manager, self.position = manager, position
        self.steps, self.every, self.listeners = steps, every, list(listeners)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # `batch` counts from the epoch's start, resumed steps included (see run.train_epoch).
        step = batch + 1
        if step % self.every == 0 and step < self.steps:
            self.save(self.epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, 0)

    def save(self, epoch, step):
        self.position.assign([epoch, step])
        number = epoch * self.steps + step
        self.manager.save(checkpoint_number=number)
        write_json(os.path.join(self.manager.directory, "progress.json"),
                    {"epoch": epoch, "step": step})
        for listener in self.listeners:
            if hasattr(listener, "on_backup_saved"):
                listener.on_backup_saved(number, epoch, step)


@contextlib.contextmanager
def ema_weights(swap):
    """The optimizer's averages in the model for a while (evaluation, saving), through the test
    hooks of `swap` (a keras.callbacks.SwapEMAWeights, or None: no EMA, nothing to do)."""
    if swap is None:
        yield
        return
    swap.on_test_begin()
    try:
        yield
    finally:
        swap.on_test_end()


class PlainModelSaver:
    """What `ModelCheckpoint` saves through: the plain classifier, written atomically.

    `save(path)` writes `model` without the training-only state: synchronized BN (a
    multi-replica setting), a frozen backbone (a phase of training) and the optimizer that the
    callbacks find on `model.optimizer` (it would go into the file); with `swap`, with the
    optimizer's average of the weights. All come back afterwards.

    Args:
        model (keras.Model): The model being trained.
        swap (keras.callbacks.SwapEMAWeights or None): Puts the average in. Defaults to None.
    """

    def __init__(self, model, swap=None):
        self.model, self.swap = model, swap

    @contextlib.contextmanager
    def plain(self):
        """The model as the plain classifier for a while (saving); the training state comes back."""
        model = self.model
        norms = [layer for layer in recipe.walk_layers(model)
                 if isinstance(layer, keras.layers.BatchNormalization)]
        synced = [norm.synchronized for norm in norms]
        trainable = [layer.trainable for layer in model.layers]
        optimizer = getattr(model, "optimizer", None)
        try:
            recipe.synchronize_batch_norm(model, False)
            for layer in model.layers:
                layer.trainable = True
            model.optimizer = None
            yield model
        finally:
            model.optimizer = optimizer
            for layer, flag in zip(norms, synced):
                layer.synchronized = flag
            for layer, flag in zip(model.layers, trainable):
                layer.trainable = flag

    def save(self, path, overwrite=True):
        """Writes the plain classifier to `path` (`overwrite`: always, the write is atomic)."""
        with ema_weights(self.swap), self.plain() as model:
            write_atomically(path, model.save)


def tensorboard_callback(path, log):
    """`keras.callbacks.TensorBoard` for `path`, or None, said once, when it cannot write there.

    `tf.summary.scalar` imports the tensorboard package at each call: without it, the first
    write, after the first epoch, would end the run. Logs are a side output; the run goes on.
    """
    try:
        import tensorboard.summary.v2  # noqa: F401  (what tf.summary.scalar imports)
    except ImportError:
        log("warning: TensorBoard is not installed (pip install tensorboard): "
            "training goes on without logs/.")
        return None
    try:
        tf.io.gfile.makedirs(path)
    except (tf.errors.OpError, OSError) as error:
        log(f"warning: cannot write TensorBoard logs to {path} ({error}): "
            "training goes on without them.")
        return None
    return keras.callbacks.TensorBoard(path, write_graph=False)


def run_callbacks(run, start_epoch, best_top1):
    """The `CallbackList` of a run (see the module docstring for the order and why).

    Args:
        run (run.Run): The built run (model, optimizer, checkpoint manager, `ema_swap`).
        start_epoch (int): The epoch the run starts or resumes at.
        best_top1 (float or None): The best validation top-1 before `start_epoch` (resume).
    """
    user = list(run.callbacks)
    ours = [run.ema_swap] if run.ema_swap is not None else []
    if run.chief:
        ours.append(keras.callbacks.CSVLogger(os.path.join(run.out_dir, "history.csv"),
                                              append=start_epoch > 0))
        if run.tensorboard is not None:
            ours.append(run.tensorboard)
        best = keras.callbacks.ModelCheckpoint(
            os.path.join(run.out_dir, "best.keras"), monitor="val_top1", mode="max",
            save_best_only=True, initial_value_threshold=best_top1)
        ours.append(best)
    ours.append(BackupCheckpoint(run.manager, run.position, run.steps,
                                 run.config.checkpoint_every, listeners=user))
    callback_list = keras.callbacks.CallbackList(
        ours + user, model=run.model, epochs=run.config.epochs, steps=run.steps, verbose=0)
    if run.chief:  # saves the plain classifier with the averaged weights, atomically
        best.set_model(PlainModelSaver(run.model, run.ema_swap))
    return callback_list
