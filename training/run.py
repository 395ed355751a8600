"""One phase of training as named pieces over one `Run`: preflight, build, restore, train one
epoch, evaluate, save the outputs; `run_training` strings them together.

The epochs are driven through a `keras.callbacks.CallbackList` as Keras documents for custom
loops (training/callbacks.py says which callbacks, in which order, and why); the step itself is
our `strategy.run` step (training/loop.py says why not `fit`).
"""
import contextlib
import csv
import dataclasses
import os
import re
import sys
import tempfile
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from keras_resnest.atomic_files import write_atomically, write_json
from keras_resnest.layers.backend_paths import unfused_training
from keras_resnest.training import callbacks as callbacks_lib
from keras_resnest.training import data as data_lib
from keras_resnest.training import evaluate as evaluate_lib
from keras_resnest.training import finetune, recipe, run_record
from keras_resnest.training.config import TrainConfig
from keras_resnest.weights import hf_hub

# What a survivor's collective ops raise when a peer worker is gone (TF 2.21): the health check
# aborts pending collectives (Unavailable, Cancelled, Aborted) or a collective times out.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


# The columns of history.csv, in the order keras.callbacks.CSVLogger writes them (sorted keys).
HISTORY_FIELDS = ("epoch", "accuracy", "learning_rate", "loss", "seconds", "val_top1", "val_top5")


class PeerLostError(RuntimeError):
    """A peer worker of a multi-worker run was lost; the message is one line saying what to do."""


@dataclasses.dataclass
class Run:
    """Everything one phase of training reads and builds.

    Args:
        config (config.TrainConfig): The phase's configuration.
        data (data.TrainingData): Training and validation images.
        out_dir (str): Where this worker writes (the run directory, or workers/<i>/).
        strategy (tf.distribute.Strategy): The strategy the steps run under.
        chief (bool): Whether this worker writes the run's outputs.
        log (callable): Prints one message (a no-op on other workers).
        callbacks (list of keras.callbacks.Callback): The user's, after ours. Defaults to none.
        build_model (callable or None): Builds the model in the strategy's scope instead of the
            classifier of `config` (the QAT phase passes its quantization-aware copy).
            Defaults to None.
    """

    config: TrainConfig
    data: data_lib.TrainingData
    out_dir: str
    strategy: tf.distribute.Strategy
    chief: bool
    log: Callable[..., None]
    callbacks: list[keras.callbacks.Callback] = dataclasses.field(default_factory=list)
    build_model: Optional[Callable[[], keras.Model]] = None
    # None until `run_training` builds them: `build` (model to infer, ema_swap), `restore`
    # (position, checkpoint, manager) and, on the chief, the TensorBoard callback.
    model: Optional[keras.Model] = None
    optimizer: Optional[keras.optimizers.Optimizer] = None
    loss_fn: Optional[keras.losses.Loss] = None
    infer: Optional[Callable] = None  # the model's inference as a tf.function
    position: Optional[tf.Variable] = None  # (epoch, step in epoch), saved in the checkpoint
    checkpoint: Optional[tf.train.Checkpoint] = None
    manager: Optional[tf.train.CheckpointManager] = None
    tensorboard: Optional[keras.callbacks.TensorBoard] = None  # None: no logs/ (said at start)
    ema_swap: Optional[keras.callbacks.SwapEMAWeights] = None  # when the optimizer averages

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync

    @property
    def global_batch(self):
        return self.config.batch_size * self.replicas

    @property
    def steps(self):
        return self.config.steps_per_epoch or self.data.train_size // self.global_batch

    @property
    def peak_lr(self):
        return self.config.learning_rate or recipe.scaled_learning_rate(
            self.config.optimizer, self.global_batch)

    @property
    def unfreeze_epoch(self):
        if not self.config.freeze_backbone:
            return 0
        chosen = self.config.unfreeze_epoch
        return chosen if chosen is not None else self.config.epochs // 2

    @property
    def ema_active(self):
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)  # LossScaleOptimizer
        return bool(inner.use_ema)


def read_history(path, before_epoch):
    """Rows of an earlier attempt, for epochs that the restored checkpoint had finished."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) < before_epoch]


def write_history(path, rows):
    """Writes `rows` as history.csv, columns in the order keras.callbacks.CSVLogger appends."""
    fields = ("epoch", *sorted(k for k in rows[0] if k != "epoch")) if rows else HISTORY_FIELDS

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)


def check_output_dir(path):
    """Raises one clear error unless `path` is, or can become, a directory we can write."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(
            f"output {path} is an existing file: give a directory for the run (-o RUN_DIR)."
        )
    try:
        os.makedirs(path, exist_ok=True)
        # Writing a file is the only sure test: permission bits say nothing for root, and
        # read-only mounts or quotas show only on a write.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"output directory {path} is not writable ({error.strerror or error}): "
            "choose another -o RUN_DIR."
        ) from None


def _predict(model, dataset, infer=None):
    """Softmax scores and labels of a validation dataset (plain inference, any strategy)."""
    infer = infer or tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    scores, labels = [], []
    for images, batch_labels in dataset:
        scores.append(infer(images).numpy())
        labels.append(batch_labels.numpy())
    if not scores:
        raise ValueError("the validation set is empty: nothing to evaluate.")
    return np.concatenate(scores).astype(np.float32), np.concatenate(labels)


def evaluate_model(model, data, config, infer=None):
    """Top-1/top-5/confusion matrix of `model` on `data`'s validation images."""
    batches = data_lib.validation_batches(
        data, batch_size=config.val_batch_size, image_size=config.image_size
    )
    scores, labels = _predict(model, batches, infer)
    return evaluate_lib.classification_report(scores, labels, data.class_names, top_k=5)


def preflight(config, data, out_dir, strategy):
    """Every check that needs no model, so that a run never dies after an epoch for a reason
    it could have told at its start."""
    config.validate()
    check_output_dir(out_dir)
    # First: a folder of another run explains any error that follows from the difference.
    run_record.check_resume(out_dir, config, getattr(data, "source", None), data.class_names)
    if data.num_classes < 2:
        raise ValueError(f"{data.num_classes} class found: a classifier needs at least 2 "
                         "(one folder or label per class).")
    if config.jit_compile:
        check_jit_compile(strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    if data.train_size < global_batch:
        raise ValueError(
            f"{data.train_size} training images are fewer than one global batch of {global_batch} "
            f"({config.batch_size} per replica x {replicas} replicas): lower --batch-size."
        )
    if data.val_size < 1:
        raise ValueError(
            "the validation split is empty and every epoch ends with an evaluation: give "
            "validation images (DIR/val/, --val-tfrecord) or a larger --val-fraction."
        )
    if hf_hub.is_hub_spec(config.weights):
        # Reads the repository's config.json: a wrong repository or architecture stops here.
        hf_hub.check_repo_model(config.weights, config.model_name)
    elif config.weights not in (None, "imagenet") and not os.path.exists(str(config.weights)):
        raise FileNotFoundError(f"weights file {config.weights} does not exist: give an existing "
                                "file, 'imagenet', 'hf://<owner>/<name>', or no --weights.")


def build(run):
    """Builds the model, optimizer and loss in the strategy's scope."""
    config = run.config
    total_steps = run.steps * config.epochs
    warmup_steps = min(int(config.warmup_epochs * run.steps), total_steps // 5)
    with run.strategy.scope():
        run.model = run.build_model() if run.build_model is not None else finetune.build_classifier(
            config.model_name, num_classes=run.data.num_classes, image_size=config.image_size,
            weights=config.weights, drop_rate=config.drop_rate,
            drop_path_rate=config.drop_path_rate, dropblock_rate=config.dropblock_rate,
            last_gamma=config.last_gamma)
        if run.replicas > 1:
            recipe.synchronize_batch_norm(run.model)
        run.optimizer = recipe.build_optimizer(
            run.model, optimizer=config.optimizer,
            learning_rate=recipe.warmup_cosine_schedule(run.peak_lr, total_steps, warmup_steps),
            weight_decay=config.weight_decay, momentum=config.momentum,
            ema_momentum=config.ema_momentum, precision=config.precision)
        run.loss_fn = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing, reduction=None)
    # Where callbacks look for it, as after `compile` (SwapEMAWeights, TensorBoard's lr).
    run.model.optimizer = run.optimizer
    if run.ema_active:  # it pairs the averages with the optimizer's own list: freezing is safe
        run.ema_swap = keras.callbacks.SwapEMAWeights()
    run.infer = tf.function(lambda x: run.model(x, training=False), reduce_retracing=True)


def restore(run):
    """Sets up the backup checkpoint and restores the latest one; returns (epoch, step)."""
    run.position = tf.Variable([0, 0], dtype=tf.int64, trainable=False)  # (epoch, step in epoch)
    run.checkpoint = tf.train.Checkpoint(model=run.model, optimizer=run.optimizer,
                                         position=run.position)
    run.manager = tf.train.CheckpointManager(run.checkpoint, os.path.join(run.out_dir, "backup"),
                                             max_to_keep=2)
    if run.manager.latest_checkpoint:
        run.checkpoint.restore(run.manager.latest_checkpoint).assert_existing_objects_matched()
        epoch, step = (int(v) for v in run.position.numpy())
        run.log(f"resumed from {run.manager.latest_checkpoint}: epoch {epoch} step {step}")
    return tuple(int(v) for v in run.position.numpy())


def resumed_history(run, start_epoch):
    """The rows of history.csv for the epochs the checkpoint had finished; on the chief the file
    is cut back to them, so the epochs run again are not appended twice."""
    if not run.chief:
        return []
    path = os.path.join(run.out_dir, "history.csv")
    rows = read_history(path, start_epoch)
    if os.path.exists(path):
        write_history(path, rows)
    return rows


def make_train_step(strategy, model, optimizer, loss_fn, global_batch_size, jit_compile=False):
    """The `tf.function` step: `train_step(iterator)` -> (summed loss, correct predictions).

    Args:
        strategy (tf.distribute.Strategy): Runs the replica step (`strategy.run`).
        model (keras.Model): The classifier; its "fc" layer gives the logits.
        optimizer (keras.optimizers.Optimizer): Applies (and all-reduces) the gradients.
        loss_fn (keras.losses.Loss): Per-example loss on the logits (`reduction=None`).
        global_batch_size (int): What the loss is averaged over.
        jit_compile (bool): Compiles the step on a batch (forward, backward and the optimizer
            update) with XLA, as Keras' `fit` does with `jit_compile=True`. One replica only
            (`check_jit_compile`). Defaults to False.
    """
    # The loss is computed from the logits ("fc"), not the softmax: cross-entropy on clipped
    # probabilities loses the label-smoothing gradient of saturated classes and lets the logits
    # grow without bound. The view shares the model's layers and variables.
    logits_model = keras.Model(model.inputs, model.get_layer("fc").output)
    variables = model.trainable_variables

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = logits_model(images, training=True)
            per_example = loss_fn(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        optimizer.apply(gradients, variables)  # all-reduces across replicas, then updates
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32))
        return loss, correct

    def step_on_batch(images, labels):
        loss, correct = strategy.run(replica_step, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    if jit_compile:
        check_jit_compile(strategy)
        # The iterator's ops have no XLA kernels: only the step on the batch is compiled, as in
        # Keras' trainer (`one_step_on_data`). XLA fuses Keras' BatchNorm ops itself, and its
        # expansion of TF's fused training op rounds differently enough (about 2e-5 of the
        # update after 3 steps of tests/test_xla.py, against 1.4e-6) to use Keras' ops there.
        plain_step_on_batch = step_on_batch

        def unfused_step_on_batch(images, labels):
            with unfused_training():
                return plain_step_on_batch(images, labels)

        step_on_batch = tf.function(unfused_step_on_batch, jit_compile=True)

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        return step_on_batch(images, labels)

    return train_step


def check_jit_compile(strategy):
    """Raises a one-line ValueError unless the step can be XLA-compiled under `strategy`.

    An XLA computation runs on one device, and with several replicas the synchronized
    BatchNorm all-reduces its batch statistics inside the forward pass (a `merge_call`), which
    no per-replica compiled function may hold; Keras' `fit` turns XLA off under
    `tf.distribute` for the same reason.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        raise ValueError(f"--jit-compile runs on one device, and this strategy has {replicas} "
                         "replicas: drop --jit-compile, or train on one device.")


def _batches(run, epoch, skip):
    """The distributed training batches of `epoch` from step `skip` (seeded by seed and epoch)."""
    config = run.config

    def dataset_fn(context):
        per_pipeline = run.replicas // context.num_input_pipelines  # batches consumed per step
        return data_lib.training_batches(
            run.data, epoch=epoch,
            batch_size=context.get_per_replica_batch_size(run.global_batch),
            image_size=config.image_size, steps=run.steps * per_pipeline,
            augment=config.augment, seed=config.seed, skip=skip * per_pipeline,
            num_shards=context.num_input_pipelines, shard_index=context.input_pipeline_id,
            deterministic=config.deterministic)

    return iter(run.strategy.distribute_datasets_from_function(dataset_fn))


def train_epoch(run, epoch, skip, train_step, callbacks):
    """Runs the steps `skip`.. of `epoch`; returns its logs and the number of steps run."""
    iterator = _batches(run, epoch, skip)
    bar = None
    if run.chief:
        run.log(f"epoch {epoch + 1}/{run.config.epochs}")
        bar = keras.utils.Progbar(run.steps, stateful_metrics=["loss", "accuracy", "lr"],
                                  verbose=1 if sys.stdout.isatty() else 2)
        bar.update(skip)
    callbacks.on_epoch_begin(epoch)
    loss_sum, correct_sum, done = 0.0, 0.0, 0
    started = time.perf_counter()
    for step in range(skip, run.steps):  # from the epoch's start, as BackupCheckpoint counts
        callbacks.on_train_batch_begin(step)
        loss, correct = train_step(iterator)
        loss_sum, correct_sum, done = loss_sum + float(loss), correct_sum + float(correct), done + 1
        logs = {"loss": loss_sum / done, "accuracy": correct_sum / (done * run.global_batch)}
        callbacks.on_train_batch_end(step, logs)
        if bar is not None:
            bar.update(step + 1, [*logs.items(), ("lr", float(run.optimizer.learning_rate))])
    seconds = time.perf_counter() - started
    return {
        "loss": loss_sum / max(done, 1),
        "accuracy": correct_sum / max(done * run.global_batch, 1),
        "learning_rate": float(run.optimizer.learning_rate),
        "seconds": round(seconds, 2),
    }, done


def evaluate(run, callbacks):
    """Validation top-1/top-5 logs; SwapEMAWeights evaluates the average between the test hooks."""
    callbacks.on_test_begin()
    report = evaluate_model(run.model, run.data, run.config, run.infer)
    logs = {"val_top1": report["top1"], "val_top5": report["top5"]}
    callbacks.on_test_end(logs)
    return logs


def set_phase(run, epoch, train_step, frozen):
    """(Un)freezes the backbone for `epoch`; returns the step traced for its trainable variables."""
    want_frozen = epoch < run.unfreeze_epoch
    if want_frozen == frozen:
        return train_step, frozen
    finetune.set_backbone_trainable(run.model, not want_frozen)
    if run.config.freeze_backbone:
        run.log(f"epoch {epoch + 1}: backbone {'frozen' if want_frozen else 'trainable'}")
    # The trainable variables changed: a new step is traced for them.
    return make_train_step(run.strategy, run.model, run.optimizer, run.loss_fn,
                           run.global_batch, jit_compile=run.config.jit_compile), want_frozen


def save_outputs(run, result):
    """Writes the final model (the EMA of the weights when on), its evaluation and the summary;
    the model then holds the raw weights again, as the checkpoint has them."""
    out = run.out_dir
    saver = callbacks_lib.PlainModelSaver(run.model)
    with callbacks_lib.ema_weights(run.ema_swap):
        with saver.plain():
            write_atomically(os.path.join(out, "model.weights.h5"), run.model.save_weights)
        write_json(os.path.join(out, "run_summary.json"),
                    {k: v for k, v in result.items() if k != "history"})
        if run.chief:
            report = evaluate_model(run.model, run.data, run.config, run.infer)
            run.log(evaluate_lib.format_report(report))
            saver.save(os.path.join(out, "model.keras"))
            write_json(os.path.join(out, "class_names.json"), run.data.class_names)
            write_json(os.path.join(out, "evaluation.json"), report)
            run_record.write_record(out, run.config, getattr(run.data, "source", None),
                                    run.data.class_names)
            result["evaluation"] = report
            run.log(f"saved {os.path.join(out, 'model.keras')} and class_names.json")
    result["model"] = run.model
    return result


def lost_peer_message(run, error):
    """The one line a survivor prints when a peer worker is gone."""
    resolver = run.strategy.cluster_resolver
    workers = resolver.cluster_spec().as_dict()
    own = (resolver.task_type, int(resolver.task_id or 0))
    named = [(job, int(task)) for job, task in
             re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", error.message or "")]
    lost = next((peer for peer in named if peer != own), None)
    if lost is not None and lost[0] in workers and lost[1] < len(workers[lost[0]]):
        who = f"{lost[0]} {lost[1]} ({workers[lost[0]][lost[1]]})"
    else:
        peers = [address for job, addresses in sorted(workers.items())
                 for task, address in enumerate(addresses) if (job, task) != own]
        who = f"a peer worker (one of {', '.join(peers)})"
    epoch, step = (int(v) for v in run.position.numpy())
    return (f"{who} was lost ({type(error).__name__}): this worker's last saved step is epoch "
            f"{epoch} step {step} in {run.manager.directory}; restart every worker with the same "
            "command to resume from there.")


@contextlib.contextmanager
def _peer_loss_reported(run):
    """Turns a lost peer of a multi-worker run into `PeerLostError` (one line, no trace)."""
    if not isinstance(run.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    try:
        yield
    except PEER_ERRORS as error:
        raise PeerLostError(lost_peer_message(run, error)) from None


def run_training(run):
    """Trains one phase (see the module docstring); returns the result dict of `loop.train`."""
    config = run.config
    # Checked before the model is built, like everything else knowable at the start.
    if run.chief:
        run.tensorboard = callbacks_lib.tensorboard_callback(os.path.join(run.out_dir, "logs"),
                                                             run.log)
    build(run)
    start_epoch, start_step = restore(run)
    history = resumed_history(run, start_epoch)
    best = max((float(row["val_top1"]) for row in history), default=None)
    run.log(
        f"training {config.model_name} on {run.data.train_size} images "
        f"({run.data.num_classes} classes), {run.replicas} replica(s) x {config.batch_size} = "
        f"global batch {run.global_batch}, {run.steps} steps/epoch, peak lr {run.peak_lr:g}, "
        f"precision {config.precision}")
    callbacks = callbacks_lib.run_callbacks(run, start_epoch, best)
    train_step, frozen = None, None
    images_seen, train_seconds = 0, 0.0
    with _peer_loss_reported(run):
        callbacks.on_train_begin()
        for epoch in range(start_epoch, config.epochs):
            train_step, frozen = set_phase(run, epoch, train_step, frozen)
            skip = start_step if epoch == start_epoch else 0
            logs, done = train_epoch(run, epoch, skip, train_step, callbacks)
            images_seen += done * run.global_batch
            train_seconds += logs["seconds"]
            if run.chief:  # evaluation needs no collective ops: only the chief spends time on it
                logs.update(evaluate(run, callbacks))
                history.append({"epoch": epoch, **logs})
                run.log(f"epoch {epoch + 1}: loss {logs['loss']:.4f} accuracy "
                        f"{logs['accuracy']:.4f} val_top1 {logs['val_top1']:.4f} val_top5 "
                        f"{logs['val_top5']:.4f} ({logs['seconds']:.1f}s)")
            callbacks.on_epoch_end(epoch, logs)
        callbacks.on_train_end()
    result = {
        "history": history,
        "global_batch_size": run.global_batch,
        "replicas": run.replicas,
        "steps_per_epoch": run.steps,
        "optimizer_steps": int(run.optimizer.iterations.numpy()),
        "train_images_per_second": images_seen / train_seconds if train_seconds else None,
    }
    return save_outputs(run, result)


def train_phase(config, data, out_dir, strategy, chief, log, callbacks, build_model=None):
    """One phase of training (`loop.train` runs the float phase, training/qat_phase.py the QAT
    phase); returns its result dict.

    Args:
        config (TrainConfig): The phase's configuration, validated and resolved.
        data (data.TrainingData): Training and validation images.
        out_dir (str): Where this worker writes.
        strategy (tf.distribute.Strategy): The strategy the steps run under.
        chief (bool): Whether this worker writes the run's outputs.
        log (callable): Prints one message.
        callbacks (list of keras.callbacks.Callback): The user's.
        build_model (callable or None): Builds the model (in the strategy's scope) instead of
            the classifier of `config`; the QAT phase passes its quantization-aware copy.
            Defaults to None.
    """
    return run_training(Run(config, data, out_dir, strategy, chief, log, list(callbacks),
                            build_model))
