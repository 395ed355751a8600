"""The training loop: a custom distributed step (`strategy.run`) with checkpoint/resume.

Why not `model.fit`: Keras 3 `fit` fails under MultiWorkerMirroredStrategy (keras#20585). A
step written with `strategy.run` works the same under the default strategy, MirroredStrategy
(one machine, many devices) and MultiWorkerMirroredStrategy (many machines, `TF_CONFIG`).

* Global batch = per-replica batch x replicas; the loss is averaged over the global batch
  (`tf.nn.compute_average_loss`) and the optimizer all-reduces the gradients.
* BatchNorm is synchronized across replicas when there is more than one.
* Fault tolerance: a `tf.train.Checkpoint` of the model, optimizer (EMA included) and the
  (epoch, step) position is written every `checkpoint_every` steps and at each epoch end under
  `RUN_DIR/backup`. The example order of an epoch depends only on (seed, epoch), so a killed run
  restarted with the same command resumes at the same epoch and step and loses no progress.
  Every worker keeps its own backup (no shared file system needed); the chief writes the outputs.
* Outputs (chief): `history.csv`, TensorBoard logs in `logs/`, `best.keras` (best validation
  top-1), `model.keras` + `model.weights.h5`, `class_names.json`, `evaluation.json`.
  Other workers write `RUN_DIR/workers/<index>/` (their backup and final weights).
  Without TensorBoard installed the run says so once, at its start, and goes on without `logs/`.
* EMA (`ema_momentum`): evaluation and the saved models use the optimizer's average of the
  weights; training and the checkpoints keep the raw weights (see `_EmaWeights`).
* Fail before work: everything knowable at the start (output directory, seed, classes,
  training images for one global batch, a non-empty validation split, the weights file) is
  checked before the model is built, each with one line naming the problem and the fix.
* QAT (`qat_epochs`): after the float epochs, the same loop trains the quantization-aware copy
  in `RUN_DIR/qat/` (training/qat_phase.py), with its own checkpoints and outputs.
* `deterministic=True` seeds everything from `seed` and turns on TensorFlow's op determinism
  for the run; `train` leaves op determinism as it found it.
* Test-only: with the environment variable `KERAS_RESNEST_TEST_KILL_AT_CHECKPOINT=N` the process
  SIGKILLs itself right after writing checkpoint N (epoch x steps_per_epoch + step), so the
  kill-and-resume test stops at the same step on any machine. Never set it otherwise.

Example (a tiny run on the embedded digits; `keras-resnest train` wraps this):
    >>> from keras_resnest.training.data import digits_data
    >>> from keras_resnest.training.loop import TrainConfig, train
    >>> result = train(TrainConfig(model_name="resnest14d", image_size=32, epochs=1, batch_size=32,
    ...                            steps_per_epoch=2), digits_data(32), "/tmp/doctest_run")  # doctest: +SKIP
    >>> sorted(result["evaluation"])[:2]  # doctest: +SKIP
    ['class_names', 'confusion_matrix']
"""
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

# TensorFlow 2.21 exports only `tf.config.experimental.enable_op_determinism`; its reader and its
# inverse live unexported beside it (Keras's trainer imports them from there too).
from tensorflow.python.framework.config import disable_op_determinism, is_op_determinism_enabled

from keras_resnest.atomic_files import written_atomically
from keras_resnest.training import augment as augment_lib
from keras_resnest.training import data as data_lib
from keras_resnest.training import evaluate as evaluate_lib
from keras_resnest.training import finetune, recipe
from keras_resnest.training import strategy as strategy_lib

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_top1", "val_top5", "learning_rate", "seconds")
MAX_SEED = 2**31 - 1  # the int32 range: a seed every seeded library here (NumPy, TF, Keras) accepts
TEST_KILL_ENV = "KERAS_RESNEST_TEST_KILL_AT_CHECKPOINT"  # test-only, see the module docstring


@dataclass
class TrainConfig:
    """Everything a run needs besides the data; defaults follow the ResNeSt recipe."""

    model_name: str = "resnest50"
    weights: str = None  # None (from scratch), "imagenet" or a weights file for the backbone
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32  # per replica; the global batch is batch_size x replicas
    optimizer: str = "sgd"  # or "adamw"
    learning_rate: float = None  # peak; None: 0.1 x global_batch / 256 (SGD), 1e-3 x ... (AdamW)
    warmup_epochs: float = 5.0  # capped to a fifth of the run for short runs
    weight_decay: float = None  # None: 1e-4 (SGD, coupled L2), 0.05 (AdamW, decoupled)
    momentum: float = 0.9
    label_smoothing: float = 0.1
    ema_momentum: float = None  # e.g. 0.9999: evaluate and save the EMA of the weights
    last_gamma: bool = None  # None: zero-init when training from scratch
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dropblock_rate: float = 0.0
    freeze_backbone: bool = False
    unfreeze_epoch: int = None  # None: half the epochs when freeze_backbone is set
    precision: str = "float32"
    augment: augment_lib.AugmentConfig = field(default_factory=augment_lib.AugmentConfig)
    seed: int = 0
    deterministic: bool = False
    steps_per_epoch: int = None  # None: one pass over the training images
    checkpoint_every: int = 50  # steps
    val_batch_size: int = 64
    qat_epochs: int = 0  # quantization-aware epochs after the float ones (training/qat_phase.py)
    qat_learning_rate: float = None  # None: a tenth of the float phase's default peak

    def validate(self):
        checks = [
            (self.epochs >= 1 or (self.epochs == 0 and self.qat_epochs >= 1), "epochs",
             "an integer >= 1 (0 only with qat_epochs >= 1)"),
            (isinstance(self.qat_epochs, int) and self.qat_epochs >= 0, "qat_epochs", "an integer >= 0"),
            (self.qat_epochs == 0 or self.precision == "float32", "precision", "float32 with qat_epochs (int8 QAT runs in float32)"),
            (self.qat_learning_rate is None or self.qat_learning_rate > 0, "qat_learning_rate", "a value > 0"),
            (self.epochs >= 1 or str(self.weights).endswith(".keras"), "weights",
             "a trained classifier .keras file when epochs is 0 (QAT starts from it)"),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.image_size >= 32, "image_size", "an integer >= 32"),
            (self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing", "a value in [0, 1)"),
            (self.warmup_epochs >= 0, "warmup_epochs", "a value >= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every", "an integer >= 1"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch", ">= 1"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate", "a value > 0"),
            (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}]"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected {expected}.")


def _atomic_write(path, write):
    """Writes through `write(tmp_path)` to a temporary file, then renames it over `path`.

    The temporary file keeps `path`'s extensions (".keras"/".weights.h5") and gets the mode of
    a plain new file (umask), so outputs are as readable as any other file the user writes.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with written_atomically(path) as tmp:
        write(tmp)


def _write_json(path, value):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=1)

    _atomic_write(path, write)


def _read_history(path, before_epoch):
    """Rows of an earlier attempt, for epochs that the restored checkpoint had finished."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) < before_epoch]


def _write_history(path, rows):
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    _atomic_write(path, write)


def _save_model(model, path):
    _atomic_write(path, model.save)


class _EmaWeights:
    """Puts the optimizer's EMA of the weights into the model for a while (evaluation, saving).

    Public Keras API only. `finalize_variable_values(variables)` is Keras's own way to put the
    averages into the model (what `fit` does at its end), but it only overwrites: a resumable
    run must go on training, and checkpointing, the raw weights. So the raw values are copied
    out first and assigned back afterwards; the averages themselves are never written, so the
    optimizer state in a checkpoint is exactly what training made.

    `variables` must be the list the optimizer was built on, in that order: Keras pairs them
    with its averages by position (`recipe.build_optimizer` builds on `model.trainable_variables`
    before any freezing; freezing later shortens that list, so it is captured once).
    """

    def __init__(self, optimizer, variables):
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
        self.active = bool(inner.use_ema)
        self.optimizer, self.variables = optimizer, list(variables)

    @contextlib.contextmanager
    def applied(self):
        if not self.active:
            yield
            return
        raw = [variable.numpy() for variable in self.variables]
        self.optimizer.finalize_variable_values(self.variables)
        try:
            yield
        finally:
            for variable, value in zip(self.variables, raw):
                variable.assign(value)


def check_output_dir(path):
    """Raises one clear error unless `path` is, or can become, a directory this process can write."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"output {path} is an existing file: give a directory for the run (-o RUN_DIR).")
    try:
        os.makedirs(path, exist_ok=True)
        # Writing a file is the only sure test: permission bits say nothing for root, and
        # read-only mounts or quotas show only on a write.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"output directory {path} is not writable ({error.strerror or error}): choose another -o RUN_DIR."
        ) from None


def _test_kill_checkpoint():
    """The checkpoint number after which this process kills itself (test-only), or None."""
    raw = os.environ.get(TEST_KILL_ENV)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{TEST_KILL_ENV}={raw!r}: expected a checkpoint number; it is test-only, unset it.") from None


def _preflight(config, data, out_dir, strategy):
    """Every check that needs no model, so that a run never dies after an epoch for a reason
    it could have told at its start. Returns the test-only kill checkpoint (or None)."""
    config.validate()
    check_output_dir(out_dir)
    if data.num_classes < 2:
        raise ValueError(f"{data.num_classes} class found: a classifier needs at least 2 (one folder or label per class).")
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    if data.train_size < global_batch:
        raise ValueError(
            f"{data.train_size} training images are fewer than one global batch of {global_batch} "
            f"({config.batch_size} per replica x {replicas} replicas): lower --batch-size."
        )
    if data.val_size < 1:
        raise ValueError(
            "the validation split is empty and every epoch ends with an evaluation: give validation "
            "images (DIR/val/, --val-tfrecord) or a larger --val-fraction."
        )
    if config.weights not in (None, "imagenet") and not os.path.exists(str(config.weights)):
        raise FileNotFoundError(
            f"weights file {config.weights} does not exist: give an existing file, 'imagenet', or no --weights."
        )
    return _test_kill_checkpoint()


def _summary_writer(path, log):
    """A TensorBoard writer for `path`, or None, said once, when its logs cannot be written.

    `tf.summary.scalar` imports the tensorboard package at each call: without it, the first
    write, after the first epoch, would end the run. Logs are a side output; the run goes on.
    """
    try:
        import tensorboard.summary.v2  # noqa: F401  (what tf.summary.scalar imports)
    except ImportError:
        log("warning: TensorBoard is not installed (pip install tensorboard): training goes on without logs/.")
        return None
    try:
        return tf.summary.create_file_writer(path)
    except (tf.errors.OpError, OSError) as error:
        log(f"warning: cannot write TensorBoard logs to {path} ({error}): training goes on without them.")
        return None


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
    batches = data_lib.validation_batches(data, batch_size=config.val_batch_size, image_size=config.image_size)
    scores, labels = _predict(model, batches, infer)
    return evaluate_lib.classification_report(scores, labels, data.class_names, top_k=5)


def _make_train_step(strategy, model, optimizer, loss_fn, global_batch_size):
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
            tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32)
        )
        return loss, correct

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        loss, correct = strategy.run(replica_step, args=(images, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    return train_step


def _progress_bar(steps, enabled):
    if not enabled:
        return None
    return keras.utils.Progbar(steps, stateful_metrics=["loss", "accuracy", "lr"], verbose=1 if sys.stdout.isatty() else 2)


def train(config, data, run_dir, strategy=None, log=print):
    """Trains `config.model_name` on `data`, writing checkpoints and outputs under `run_dir`.

    Restarting with the same arguments after an interruption resumes from the last checkpoint.
    Returns a dict with the history, the final evaluation and throughput figures.
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = strategy_lib.is_chief(strategy)
    out_dir = run_dir if chief else os.path.join(run_dir, "workers", str(strategy_lib.worker_index(strategy)))
    log = log if chief else (lambda *a, **k: None)
    kill_at = _preflight(config, data, out_dir, strategy)

    # Op determinism and the dtype policy are process-wide: leave them as they were found.
    was_deterministic = is_op_determinism_enabled()
    previous_policy = keras.mixed_precision.dtype_policy()
    if config.deterministic:
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_dtype_policy(config.precision)
    try:
        result = _train(config, data, out_dir, strategy, chief, log, kill_at) if config.epochs else None
        if config.qat_epochs:  # imported here: the QAT layers are needed only for this phase
            from keras_resnest.training import qat_phase

            result = qat_phase.train_qat(config, data, out_dir, strategy, chief, log, kill_at, _train)
        return result
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        if not was_deterministic:
            disable_op_determinism()


def _train(config, data, out_dir, strategy, chief, log, kill_at, build_model=None):
    """The run itself; `build_model()` (called in the strategy's scope) replaces the classifier
    built from `config` (the QAT phase passes its quantization-aware copy)."""
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    steps = config.steps_per_epoch or data.train_size // global_batch  # >= 1: see _preflight
    total_steps = steps * config.epochs
    warmup_steps = min(int(config.warmup_epochs * steps), total_steps // 5)
    peak_lr = config.learning_rate or recipe.scaled_learning_rate(config.optimizer, global_batch)
    unfreeze_epoch = (
        (config.unfreeze_epoch if config.unfreeze_epoch is not None else config.epochs // 2)
        if config.freeze_backbone
        else 0
    )

    # Checked before the model is built, like everything else knowable at the start.
    writer = _summary_writer(os.path.join(out_dir, "logs"), log) if chief else None

    with strategy.scope():
        model = build_model() if build_model is not None else finetune.build_classifier(
            config.model_name,
            num_classes=data.num_classes,
            image_size=config.image_size,
            weights=config.weights,
            drop_rate=config.drop_rate,
            drop_path_rate=config.drop_path_rate,
            dropblock_rate=config.dropblock_rate,
            last_gamma=config.last_gamma,
        )
        if replicas > 1:
            recipe.synchronize_batch_norm(model)
        optimizer = recipe.build_optimizer(
            model,
            optimizer=config.optimizer,
            learning_rate=recipe.warmup_cosine_schedule(peak_lr, total_steps, warmup_steps),
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            ema_momentum=config.ema_momentum,
            precision=config.precision,
        )
        ema = _EmaWeights(optimizer, model.trainable_variables)  # the variables the optimizer was built on
        loss_fn = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing, reduction=None
        )
    position = tf.Variable([0, 0], dtype=tf.int64, trainable=False)  # (epoch, step in epoch)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, position=position)
    backup_dir = os.path.join(out_dir, "backup")
    manager = tf.train.CheckpointManager(checkpoint, backup_dir, max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"resumed from {manager.latest_checkpoint}: epoch {int(position[0])} step {int(position[1])}")
    start_epoch, start_step = (int(v) for v in position.numpy())

    history_path = os.path.join(out_dir, "history.csv")
    history = _read_history(history_path, start_epoch)
    best_top1 = max((float(r["val_top1"]) for r in history), default=-1.0)
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)  # traced once
    log(
        f"training {config.model_name} on {data.train_size} images ({data.num_classes} classes), "
        f"{replicas} replica(s) x {config.batch_size} = global batch {global_batch}, "
        f"{steps} steps/epoch, peak lr {peak_lr:g}, precision {config.precision}"
    )

    def save_position(epoch, step):
        position.assign([epoch, step])
        number = epoch * steps + step
        manager.save(checkpoint_number=number)
        _write_json(os.path.join(out_dir, "backup", "progress.json"), {"epoch": epoch, "step": step})
        if number == kill_at:  # test-only (TEST_KILL_ENV): die as a crash would, no cleanup
            os.kill(os.getpid(), signal.SIGKILL)

    train_step, frozen = None, None
    images_seen, train_seconds = 0, 0.0
    for epoch in range(start_epoch, config.epochs):
        want_frozen = epoch < unfreeze_epoch
        if want_frozen != frozen:  # (un)freezing changes the trainable variables: retrace
            finetune.set_backbone_trainable(model, not want_frozen)
            train_step, frozen = _make_train_step(strategy, model, optimizer, loss_fn, global_batch), want_frozen
            if config.freeze_backbone:
                log(f"epoch {epoch + 1}: backbone {'frozen' if frozen else 'trainable'}")
        skip = start_step if epoch == start_epoch else 0

        def dataset_fn(context, epoch=epoch, skip=skip):
            per_pipeline = replicas // context.num_input_pipelines  # batches consumed per step
            return data_lib.training_batches(
                data,
                epoch=epoch,
                batch_size=context.get_per_replica_batch_size(global_batch),
                image_size=config.image_size,
                steps=steps * per_pipeline,
                augment=config.augment,
                seed=config.seed,
                skip=skip * per_pipeline,
                num_shards=context.num_input_pipelines,
                shard_index=context.input_pipeline_id,
                deterministic=config.deterministic,
            )

        iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
        bar = _progress_bar(steps, chief)
        if bar is not None:
            log(f"epoch {epoch + 1}/{config.epochs}")
            bar.update(skip)
        loss_sum, correct_sum, done = 0.0, 0.0, 0
        started = time.perf_counter()
        for step in range(skip, steps):
            loss, correct = train_step(iterator)
            loss_sum, correct_sum, done = loss_sum + float(loss), correct_sum + float(correct), done + 1
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < steps:
                save_position(epoch, step + 1)
            if bar is not None:
                lr = float(optimizer.learning_rate)
                bar.update(step + 1, [("loss", loss_sum / done), ("accuracy", correct_sum / (done * global_batch)), ("lr", lr)])
        seconds = time.perf_counter() - started
        images_seen, train_seconds = images_seen + done * global_batch, train_seconds + seconds

        row = {
            "epoch": epoch,
            "loss": loss_sum / max(done, 1),
            "accuracy": correct_sum / max(done * global_batch, 1),
            "learning_rate": float(optimizer.learning_rate),
            "seconds": round(seconds, 2),
        }
        if chief:  # evaluation needs no collective ops: only the chief spends time on it
            with ema.applied():
                report = evaluate_model(model, data, config, infer)
                row.update(val_top1=report["top1"], val_top5=report["top5"])
                if report["top1"] > best_top1:
                    best_top1 = report["top1"]
                    _save_model(_SavingView(model), os.path.join(out_dir, "best.keras"))
            history.append(row)
            _write_history(history_path, history)
            if writer is not None:
                try:
                    with writer.as_default(step=epoch):
                        for key in ("loss", "accuracy", "val_top1", "val_top5", "learning_rate"):
                            tf.summary.scalar(key, row[key])
                    writer.flush()
                except Exception as error:  # logs are a side output: losing them must not lose the run
                    log(f"warning: writing TensorBoard logs failed ({error}): training goes on without them.")
                    writer = None
            log(f"epoch {epoch + 1}: loss {row['loss']:.4f} accuracy {row['accuracy']:.4f} "
                f"val_top1 {row['val_top1']:.4f} val_top5 {row['val_top5']:.4f} ({seconds:.1f}s)")
        save_position(epoch + 1, 0)

    result = {
        "history": history,
        "global_batch_size": global_batch,
        "replicas": replicas,
        "steps_per_epoch": steps,
        "optimizer_steps": int(optimizer.iterations.numpy()),
        "train_images_per_second": images_seen / train_seconds if train_seconds else None,
    }
    # The EMA is the final model; the raw weights come back afterwards, consistent with the
    # checkpoint if this run is resumed again.
    with ema.applied():
        _atomic_write(os.path.join(out_dir, "model.weights.h5"), model.save_weights)
        _write_json(os.path.join(out_dir, "run_summary.json"), {k: v for k, v in result.items() if k != "history"})
        if chief:
            report = evaluate_model(model, data, config, infer)
            log(evaluate_lib.format_report(report))
            _save_model(_SavingView(model), os.path.join(out_dir, "model.keras"))
            _write_json(os.path.join(out_dir, "class_names.json"), data.class_names)
            _write_json(os.path.join(out_dir, "evaluation.json"), report)
            _write_json(os.path.join(out_dir, "train_config.json"), _config_dict(config))
            result["evaluation"] = report
            log(f"saved {os.path.join(out_dir, 'model.keras')} and class_names.json")
    result["model"] = model  # with the raw weights again, as the checkpoint has them
    return result


class _SavingView:
    """`save(path)` writes `model` without the training-only flags (synchronized BN, frozen layers).

    Synchronized BN is a multi-replica setting and a frozen backbone a phase of training; the
    saved model is the plain classifier. The flags are restored afterwards.
    """

    def __init__(self, model):
        self.model = model

    def save(self, path):
        norms = [l for l in recipe._walk_layers(self.model) if isinstance(l, keras.layers.BatchNormalization)]
        synced = [l.synchronized for l in norms]
        trainable = [l.trainable for l in self.model.layers]
        try:
            recipe.synchronize_batch_norm(self.model, False)
            for layer in self.model.layers:
                layer.trainable = True
            self.model.save(path)
        finally:
            for layer, flag in zip(norms, synced):
                layer.synchronized = flag
            for layer, flag in zip(self.model.layers, trainable):
                layer.trainable = flag


def _config_dict(config):
    return dataclasses.asdict(config)
