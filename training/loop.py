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
  weights (`keras.callbacks.SwapEMAWeights`); training and the checkpoints keep the raw weights.
* The epochs run through a `keras.callbacks.CallbackList` (training/run.py): Keras's callbacks
  write history.csv, logs/ and best.keras, ours the backup (training/callbacks.py); `callbacks`
  adds the user's, after them.
* Fail before work: everything knowable at the start (output directory, seed, classes,
  training images for one global batch, a non-empty validation split, the weights file) is
  checked before the model is built, each with one line naming the problem and the fix.
* Run folders know their run: `train_config.json` (written at the start) records the
  configuration and data; resuming with options that the checkpoint cannot take (another model,
  classes, data, optimizer, EMA on/off, ...) stops with one line (training/run_record.py).
* QAT (`qat_epochs`): after the float epochs, the same loop trains the quantization-aware copy
  in `RUN_DIR/qat/` (training/qat_phase.py), with its own checkpoints and outputs.
* `deterministic=True` seeds everything from `seed` and turns on TensorFlow's op determinism
  for the run; `train` leaves op determinism as it found it.
* A lost peer of a multi-worker run ends the others with one line (`run.PeerLostError`): which
  worker was lost, the last saved step, and to restart every worker with the same command.

Example (a tiny run on the embedded digits; `keras-resnest train` wraps this):
    >>> from keras_resnest.training.data import digits_data
    >>> from keras_resnest.training.loop import TrainConfig, train
    >>> result = train(TrainConfig(model_name="resnest14d", image_size=32, epochs=1, batch_size=32,
    ...                            steps_per_epoch=2),
    ...                digits_data(32), "/tmp/doctest_run")  # doctest: +SKIP
    >>> sorted(result["evaluation"])[:2]  # doctest: +SKIP
    ['class_names', 'confusion_matrix']
"""

import csv
import dataclasses
import json
import os
import tempfile
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
from keras_resnest.training import strategy as strategy_lib

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# The columns of history.csv, in the order keras.callbacks.CSVLogger writes them (sorted keys).
HISTORY_FIELDS = ("epoch", "accuracy", "learning_rate", "loss", "seconds", "val_top1", "val_top5")
MAX_SEED = 2**31 - 1  # the int32 range: a seed every seeded library here (NumPy, TF, Keras) accepts


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
    jit_compile: bool = False  # XLA-compiles the train step (training/run.py's make_train_step)

    def resolved(self):
        """This configuration with the canonical `model_name` (a timm alias or tag resolved, as
        `resolve_model_name` does): what `train` and `keras-resnest train` both run, log and
        record. Raises ValueError naming the valid names for an unknown model."""
        from keras_resnest.models import resolve_model_name

        return dataclasses.replace(self, model_name=resolve_model_name(self.model_name))

    def validate(self):
        checks = [
            (
                self.epochs >= 1 or (self.epochs == 0 and self.qat_epochs >= 1),
                "epochs",
                "an integer >= 1 (0 only with qat_epochs >= 1)",
            ),
            (
                isinstance(self.qat_epochs, int) and self.qat_epochs >= 0,
                "qat_epochs",
                "an integer >= 0",
            ),
            (
                self.qat_epochs == 0 or self.precision == "float32",
                "precision",
                "float32 with qat_epochs (int8 QAT runs in float32)",
            ),
            (
                self.qat_learning_rate is None or self.qat_learning_rate > 0,
                "qat_learning_rate",
                "a value > 0",
            ),
            (
                self.epochs >= 1 or str(self.weights).endswith(".keras"),
                "weights",
                "a trained classifier .keras file when epochs is 0 (QAT starts from it)",
            ),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.image_size >= 32, "image_size", "an integer >= 32"),
            (self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}"),
            # TF has no deterministic XLA kernel for some gradients (MaxPoolGrad).
            (not (self.jit_compile and self.deterministic), "jit_compile",
             "False with deterministic (XLA has no deterministic max-pool gradient)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing", "a value in [0, 1)"),
            (self.warmup_epochs >= 0, "warmup_epochs", "a value >= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every", "an integer >= 1"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch", ">= 1"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate", "a value > 0"),
            (
                isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED,
                "seed",
                f"an integer in [0, {MAX_SEED}]",
            ),
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
    """Writes `rows` as history.csv, columns in the order keras.callbacks.CSVLogger appends."""
    fields = ("epoch", *sorted(k for k in rows[0] if k != "epoch")) if rows else HISTORY_FIELDS

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    _atomic_write(path, write)


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


def train(config, data, run_dir, strategy=None, log=print, callbacks=()):
    """Trains `config.model_name` on `data`, writing checkpoints and outputs under `run_dir`.

    Restarting with the same arguments after an interruption resumes from the last checkpoint;
    arguments that the checkpoint cannot take (another model, classes, data, optimizer, EMA
    on/off, ...; training/run_record.py) raise a one-line ValueError before any work.
    `config.model_name` may be a timm alias or tag (`resnest50d`), resolved as the command does.

    Args:
        config: TrainConfig. The run's configuration.
        data: data.Data. Training and validation images (training/data.py's readers).
        run_dir: str. The run directory (other workers write `run_dir/workers/<index>/`).
        strategy: tf.distribute.Strategy or None. Defaults to the current strategy.
        log: callable. Prints one message. Defaults to print.
        callbacks: list of keras.callbacks.Callback. Run after the built-in ones at each hook
            of the loop (`on_train_begin`, `on_epoch_begin/end`, `on_train_batch_begin/end`,
            and, on the chief, `on_test_begin/end` around each evaluation); `self.model` is the
            model being trained, `self.params` holds `epochs` and `steps`. A callback with a
            method `on_backup_saved(number, epoch, step)` is called right after each backup
            checkpoint is written (number = epoch x steps + step). The same callbacks serve
            the QAT phase. Defaults to none.

    Returns:
        dict. The history, the final evaluation (chief), throughput figures and the model.
    """
    from keras_resnest.training import run as run_lib
    from keras_resnest.training import run_record

    config = config.resolved()  # "resnest50d" is "resnest50" from here on, as in the command
    strategy = strategy or tf.distribute.get_strategy()
    chief = strategy_lib.is_chief(strategy)
    out_dir = (
        run_dir
        if chief
        else os.path.join(run_dir, "workers", str(strategy_lib.worker_index(strategy)))
    )
    log = log if chief else (lambda *a, **k: None)
    run_lib.preflight(config, data, out_dir, strategy)
    # Every worker records the run in its own folder, holding its own backup: a killed run's
    # folder says what it was, and the next command is checked against it (run_record.py).
    run_record.write_record(out_dir, config, getattr(data, "source", None), data.class_names)

    # Op determinism and the dtype policy are process-wide: leave them as they were found.
    was_deterministic = is_op_determinism_enabled()
    previous_policy = keras.mixed_precision.dtype_policy()
    if config.deterministic:
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_dtype_policy(config.precision)
    callbacks = list(callbacks)
    try:
        result = (
            _train(config, data, out_dir, strategy, chief, log, callbacks)
            if config.epochs
            else None
        )
        if config.qat_epochs:  # imported here: the QAT layers are needed only for this phase
            from keras_resnest.training import qat_phase

            result = qat_phase.train_qat(
                config, data, out_dir, strategy, chief, log, callbacks, _train
            )
        return result
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        if not was_deterministic:
            disable_op_determinism()


def _train(config, data, out_dir, strategy, chief, log, callbacks, build_model=None):
    """One phase of training (training/run.py).

    `build_model()` (called in the strategy's scope) replaces the classifier built from `config`
    (the QAT phase passes its quantization-aware copy).
    """
    from keras_resnest.training import run as run_lib

    return run_lib.run_training(
        run_lib.Run(config, data, out_dir, strategy, chief, log, callbacks, build_model)
    )
