"""What a run folder records about its run, and the check that a resumed run is the same run.

`RUN_DIR/train_config.json` holds the `TrainConfig` of the last command that ran there, plus
its data (`data_source`, `class_names`). It is written when a run starts, after its checks
(so a killed run has one), and again with the outputs. A command given a folder that already
holds saved progress (a checkpoint in `backup/` or `qat/backup/`) compares its own configuration
with the record first, before the data, the strategy or the model are built; a difference that
the checkpoint cannot take stops it with one line naming each field (saved -> new) and the way
out. A folder with a record but no checkpoint (a run that died before its first backup) holds
nothing to resume: the new run starts there and overwrites the record.

Which fields must match (`_MUST_MATCH`), found by restoring a checkpoint of one configuration
into the model and optimizer of another (resnest14d, TF 2.21):

* the model, the optimizer, SGD momentum on/off (its slots), EMA on/off (the averages) and loss
  scaling (`mixed_float16` wraps the optimizer in a `LossScaleOptimizer`): the restore fails with
  a shape error or "Python objects that were not bound", or silently drops state (EMA or
  momentum turned off);
* the classes, names and count: another count fails on `fc/kernel`; the same count with other
  names restores a head whose outputs mean other classes;
* the data source: the saved (epoch, step) indexes the seeded order of *these* images;
* once the QAT phase has a checkpoint, the float model it started from: float `epochs` (and
  `weights` when `epochs` is 0, QAT from a file). Extending the float phase then would leave
  the resumed QAT phase fine-tuning the old float model.

Everything else may change on resume, as nothing saved depends on it: `epochs` and `qat_epochs`
(extend a run), the learning rate, schedule, batch size (resuming on another number of replicas),
`image_size` (no ResNeSt variable depends on it: progressive resizing), the EMA momentum,
float32 <-> `mixed_bfloat16` (the same float32 variables), augmentation, dropout rates, freezing,
weight decay, label smoothing, seed, determinism and checkpoint spacing. `weights` and
`last_gamma` only initialise a model that the checkpoint then overwrites.

Example:
    >>> from keras_resnest.training.config import TrainConfig
    >>> saved = record(TrainConfig(model_name="resnest14d"), data_source("digits"),
    ...                [str(d) for d in range(10)])
    >>> new = record(TrainConfig(model_name="resnest14d", ema_momentum=0.999),
    ...              data_source("digits"), ["cat", "dog"])
    >>> print(mismatch_message("runs/digits", differences(saved, new)))
    runs/digits holds a run with other options (EMA off -> 0.999; classes 10 (0, 1, 2, 3, 4,
    ...) -> 2 (cat, dog)): rerun with the same options, or choose a new -o folder.
"""

import dataclasses
import json
import os

from keras_resnest.atomic_files import write_json
from keras_resnest.training.config import QAT_DIR

RECORD_FILE = "train_config.json"
SHOWN_CLASSES = 5


class RunMismatchError(ValueError):
    """The run folder holds progress of a run with options its checkpoint cannot take."""


def data_source(dataset=None, folder=None, tfrecord=None, val_tfrecord=None):
    """The training data's source, as the record keeps it (paths made absolute).

    Args:
        dataset (str or None): An embedded dataset ("digits").
        folder (str or None): A class-folder directory (`--data`).
        tfrecord (str or None): A TFRecord glob (`--tfrecord`).
        val_tfrecord (str or None): Its validation glob (`--val-tfrecord`).
    """
    if dataset:
        return f"dataset {dataset}"
    if folder:
        return f"folder {os.path.abspath(folder)}"
    if tfrecord:
        val = f" (val {os.path.abspath(val_tfrecord)})" if val_tfrecord else ""
        return f"tfrecord {os.path.abspath(tfrecord)}{val}"
    return None


def record(config, source=None, class_names=None):
    """The dict `train_config.json` holds: the `TrainConfig`'s fields, `data_source` and
    `class_names` (None when unknown: data from no reader of this package)."""
    return {
        **dataclasses.asdict(config),
        "data_source": source,
        "class_names": None if class_names is None else [str(name) for name in class_names],
    }


def write_record(run_dir, config, source=None, class_names=None):
    """Writes `run_dir/train_config.json` atomically."""
    path = os.path.join(run_dir, RECORD_FILE)
    write_json(path, record(config, source, class_names))


def _has_checkpoint(directory):
    # tf.train.CheckpointManager's state file, written with its first checkpoint.
    return os.path.isfile(os.path.join(directory, "backup", "checkpoint"))


def saved_record(run_dir):
    """The record of the run whose progress `run_dir` holds, or None: no checkpoint (nothing
    to resume) or no record (a folder from before records, or not one of ours)."""
    if not (_has_checkpoint(run_dir) or _has_checkpoint(os.path.join(run_dir, QAT_DIR))):
        return None
    try:
        with open(os.path.join(run_dir, RECORD_FILE), encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _ema(r):
    return "off" if r["ema_momentum"] is None else r["ema_momentum"]


def _classes(names, start=0):
    if names is None:
        return None
    shown = names[start:start + SHOWN_CLASSES]
    more = ", ..." if start + SHOWN_CLASSES < len(names) else ""
    return f"{len(names)} ({'..., ' if start else ''}{', '.join(shown)}{more})"


def _qat_start(r):
    return f"{r['epochs']} float epochs" if r["epochs"] else f"weights {r['weights']}"


# (label, what must be equal, what is shown). Keys missing from a saved record (an older one)
# or None on either side (data of unknown source) are not compared.
_MUST_MATCH = (
    ("model", lambda r: r["model_name"], lambda r: r["model_name"]),
    ("data", lambda r: r["data_source"], lambda r: r["data_source"]),
    ("optimizer", lambda r: r["optimizer"], lambda r: r["optimizer"]),
    # SGD keeps momentum slots only with momentum (AdamW's moments are always there).
    ("momentum", lambda r: r["momentum"] > 0 if r["optimizer"] == "sgd" else None,
     lambda r: r["momentum"]),
    ("EMA", lambda r: r["ema_momentum"] is not None, _ema),
    ("precision", lambda r: r["precision"] == "mixed_float16", lambda r: r["precision"]),
)
# Compared once the QAT phase has a checkpoint: the float model it fine-tunes.
_QAT_MUST_MATCH = (
    ("QAT start", lambda r: (r["epochs"], r["weights"] if not r["epochs"] else None), _qat_start),
)


def differences(saved, new, qat_started=False):
    """'label saved -> new' for each field of record `new` that record `saved` cannot take."""
    found = []
    for label, key, show in _MUST_MATCH + (_QAT_MUST_MATCH if qat_started else ()):
        try:
            before, after = key(saved), key(new)
        except (KeyError, TypeError):  # a record without the field
            continue
        if before is None or after is None or before == after:
            continue
        found.append(f"{label} {show(saved)} -> {show(new)}")
    names, new_names = saved.get("class_names"), new.get("class_names")
    if names is not None and new_names is not None and names != new_names:
        first = next((i for i, (a, b) in enumerate(zip(names, new_names)) if a != b), 0)
        first = first if len(names) == len(new_names) and first >= SHOWN_CLASSES else 0
        found.append(f"classes {_classes(names, first)} -> {_classes(new_names, first)}")
    return found


def mismatch_message(run_dir, found):
    return (f"{run_dir} holds a run with other options ({'; '.join(found)}): rerun with the "
            "same options, or choose a new -o folder.")


def check_resume(run_dir, config, source=None, class_names=None):
    """Raises `RunMismatchError` (one line) when `run_dir` holds progress of a run that
    `config` on this data cannot resume; does nothing for a new or empty folder.

    Args:
        run_dir (str): The run folder (a worker's own folder on the other workers).
        config (config.TrainConfig): The new run's configuration (canonical model name).
        source (str or None): `data_source(...)` of the new run's data; None: not compared.
        class_names (list or None): The new run's classes; None: not compared (yet).
    """
    saved = saved_record(run_dir)
    if saved is None:
        return
    qat_started = _has_checkpoint(os.path.join(run_dir, QAT_DIR))
    found = differences(saved, record(config, source, class_names), qat_started)
    if found:
        raise RunMismatchError(mismatch_message(run_dir, found))
