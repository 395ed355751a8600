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
* `train` checks, records the run and sets the precision and op determinism; each phase (the
  float epochs, then QAT) is one `run.train_phase`, the loop over epochs and steps
  (training/run.py). The epochs run through a `keras.callbacks.CallbackList`: Keras's callbacks
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

import os

import keras
import tensorflow as tf

# TensorFlow 2.21 exports only `tf.config.experimental.enable_op_determinism`; its reader and its
# inverse live unexported beside it (Keras's trainer imports them from there too).
from tensorflow.python.framework.config import disable_op_determinism, is_op_determinism_enabled

from keras_resnest.training import qat_phase, run_record
from keras_resnest.training import run as run_lib
from keras_resnest.training import strategy as strategy_lib

# `train`'s callers build a TrainConfig: it is defined in training/config.py (free of
# TensorFlow, for the command's --help) and importable from here, beside `train`.
from keras_resnest.training.config import TrainConfig  # noqa: F401


def train(config, data, run_dir, strategy=None, log=print, callbacks=()):
    """Trains `config.model_name` on `data`, writing checkpoints and outputs under `run_dir`.

    Restarting with the same arguments after an interruption resumes from the last checkpoint;
    arguments that the checkpoint cannot take (another model, classes, data, optimizer, EMA
    on/off, ...; training/run_record.py) raise a one-line ValueError before any work.
    `config.model_name` may be a timm alias or tag (`resnest50d`), resolved as the command does.

    Args:
        config (TrainConfig): The run's configuration.
        data (data.TrainingData): Training and validation images (training/data.py's readers).
        run_dir (str): The run directory (other workers write `run_dir/workers/<index>/`).
        strategy (tf.distribute.Strategy or None): Defaults to the current strategy.
        log (callable): Prints one message. Defaults to print.
        callbacks (list of keras.callbacks.Callback): Run after the built-in ones at each hook
            of the loop (`on_train_begin`, `on_epoch_begin/end`, `on_train_batch_begin/end`,
            and, on the chief, `on_test_begin/end` around each evaluation); `self.model` is the
            model being trained, `self.params` holds `epochs` and `steps`. A callback with a
            method `on_backup_saved(number, epoch, step)` is called right after each backup
            checkpoint is written (number = epoch x steps + step). The same callbacks serve
            the QAT phase. Defaults to none.

    Returns:
        dict: The history, the final evaluation (chief), throughput figures and the model.
    """
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
            run_lib.train_phase(config, data, out_dir, strategy, chief, log, callbacks)
            if config.epochs
            else None
        )
        if config.qat_epochs:
            result = qat_phase.train_qat(config, data, out_dir, strategy, chief, log, callbacks)
        return result
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        if not was_deterministic:
            disable_op_determinism()
