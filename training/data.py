"""Training data: readers (class folders, TFRecord shards, embedded digits) and tf.data pipelines.

A reader returns a `TrainingData`: class names plus two *sources* (un-shuffled, un-decoded
tf.data datasets of `(item, label)`). The pipeline functions turn a source into batches:

* training: seeded per-epoch shuffle, shard per input pipeline, parallel decode and augmentation
  (AUTOTUNE), corrupt images skipped with a warning, repeat, batch, MixUp/CutMix, a fixed number
  of batches per epoch, and `skip` to resume mid-epoch at the same step;
* validation: decode and the official evaluation transform, in order.

Folder layout: `DIR/train/<class>/*.jpg|png|...` and optionally `DIR/val/<class>/...`; without
`val/`, a seeded, per-class split holds out `val_fraction` of the training images. Each file's
header is read up front by `keras_resnest.images.inspect_image`: a file of another format, or one
that declares more than `DEFAULT_MAX_PIXELS` pixels (a decompression bomb), is named with its
reason and skipped before any pixel is decoded. Images that are corrupt inside are skipped by the
pipeline and the epoch continues, each failed read named on stderr (`warning: PATH: cannot decode
the image; skipped`; `keras-resnest train` shows it once per file).

TFRecord: `tf.train.Example`s with `image/encoded` (JPEG/PNG/GIF/BMP/WebP bytes) and
`image/class/label` (int64, 0-based), optionally `image/class/text`; the ImageNet/TF-Slim layout.

Example:
    >>> from keras_resnest.training.data import digits_data, training_batches
    >>> data = digits_data(image_size=32)
    >>> batches = training_batches(data, epoch=0, batch_size=64, image_size=32, steps=2)
    >>> [tuple(x.shape) for x, y in batches]
    [(64, 32, 32, 3), (64, 32, 32, 3)]
"""

import glob
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from keras_resnest.image_decoding import decode_image
from keras_resnest.images import DEFAULT_MAX_PIXELS, inspect_image
from keras_resnest.preprocessing import eval_transform
from keras_resnest.training import augment as augment_lib
from keras_resnest.training import run_record

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# Skipped files named one per line, up to this many; then a count of the rest.
_NAMED_SKIPS = 20


@dataclass
class TrainingData:
    """Class names plus un-shuffled `(item, label)` sources for training and validation."""

    class_names: list
    train_source: tf.data.Dataset
    val_source: tf.data.Dataset
    train_size: int
    val_size: int
    decode: Callable  # item -> float32 image (H, W, 3), 0..255, any size
    already_sized: bool = False  # items are final-size images: validation needs no crop
    skipped_files: tuple = ()
    # Where the images come from (run_record.data_source): a resumed run must read the same.
    source: str = None

    @property
    def num_classes(self):
        return len(self.class_names)


# ---------------------------------------------------------------- readers


def digits_data(image_size=32):
    """The embedded scikit-learn digits (see `digits.py`) as `TrainingData`."""
    from keras_resnest.training.digits import load_digits_dataset

    split = load_digits_dataset(image_size)
    return TrainingData(
        class_names=split.class_names,
        train_source=tf.data.Dataset.from_tensor_slices((split.train_images, split.train_labels)),
        val_source=tf.data.Dataset.from_tensor_slices((split.val_images, split.val_labels)),
        train_size=len(split.train_labels),
        val_size=len(split.val_labels),
        decode=lambda image: tf.cast(image, tf.float32),
        already_sized=True,
        source=run_record.data_source(dataset="digits"),
    )


def _list_class_folder(root, class_names=None):
    """Returns (paths, labels, class_names, skipped) for `root/<class>/<file>`."""
    if class_names is None:
        class_names = sorted(
            d
            for d in os.listdir(root)
            if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
        )
        if not class_names:
            raise ValueError(
                f"{root}: no class folders: put each class's images in {root}/<class name>/."
            )
    paths, labels, skipped = [], [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue  # a class may be absent from val/
        for file_name in sorted(os.listdir(folder)):
            path = os.path.join(folder, file_name)
            if file_name.startswith(".") or not os.path.isfile(path):
                continue
            reason = inspect_image(path)
            if reason is None:
                paths.append(path)
                labels.append(label)
            else:
                skipped.append((path, reason))
    return paths, labels, class_names, skipped


def _seeded_split(labels, val_fraction, seed):
    """Per-class random hold-out: returns (train_indices, val_indices)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train_idx, val_idx = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(members) * val_fraction)) if len(members) > 1 else 0
        val_idx.extend(members[:n_val])
        train_idx.extend(members[n_val:])
    return np.sort(train_idx), np.sort(val_idx)


def _decode_image_file(path):
    return _decode_image_bytes(tf.io.read_file(path))


def _decode_image_bytes(encoded):
    # The pixel limit again, in the graph: TFRecord bytes are never listed, and a listed file
    # may change before it is read. A refused image fails like a corrupt one and is skipped.
    return tf.cast(decode_image(encoded, max_pixels=DEFAULT_MAX_PIXELS), tf.float32)


def _report_skipped(skipped):
    """One stderr line per skipped (path, reason), the first `_NAMED_SKIPS`, then a count."""
    lines = [f"warning: {path}: {reason}; skipped" for path, reason in skipped[:_NAMED_SKIPS]]
    if len(skipped) > _NAMED_SKIPS:
        lines.append(f"warning: {len(skipped) - _NAMED_SKIPS} more unusable file(s) skipped")
    print("\n".join(lines), file=sys.stderr)


def folder_data(directory, val_fraction=0.1, seed=0):
    """Reads `directory/train/<class>/*` (+ `directory/val/<class>/*` or a seeded split)."""
    train_dir, val_dir = os.path.join(directory, "train"), os.path.join(directory, "val")
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(
            f"{directory}: expected a train/ folder with one sub-folder per class "
            "(and optionally val/)."
        )
    paths, labels, class_names, skipped = _list_class_folder(train_dir)
    if os.path.isdir(val_dir):
        val_paths, val_labels, _, val_skipped = _list_class_folder(val_dir, class_names)
        skipped += val_skipped
        # Every epoch ends with an evaluation: an empty val/ would end the run after epoch 1.
        if not val_paths:
            raise ValueError(
                f"{val_dir}: no images in its class folders ({', '.join(class_names)}): "
                "add validation images or remove val/ to hold out --val-fraction of train/."
            )
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction!r}: expected a fraction in (0, 1).")
        train_idx, val_idx = _seeded_split(labels, val_fraction, seed)
        if paths and not len(val_idx):
            largest = max(np.bincount(labels))
            raise ValueError(
                f"--val-fraction {val_fraction:g} holds out no image of {train_dir} "
                f"({len(paths)} images, at most {largest} per class): "
                "raise --val-fraction or add a val/ folder."
            )
        val_paths, val_labels = [paths[i] for i in val_idx], [labels[i] for i in val_idx]
        paths, labels = [paths[i] for i in train_idx], [labels[i] for i in train_idx]
    if skipped:
        _report_skipped(skipped)
    if not paths:
        raise ValueError(f"{train_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found.")
    return TrainingData(
        class_names=class_names,
        train_source=tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32))),
        val_source=tf.data.Dataset.from_tensor_slices(
            (tf.constant(val_paths, tf.string), np.asarray(val_labels, np.int32))
        ),
        train_size=len(paths),
        val_size=len(val_paths),
        decode=_decode_image_file,
        skipped_files=tuple(path for path, _ in skipped),
        source=run_record.data_source(folder=directory),
    )


_TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/class/label": tf.io.FixedLenFeature((), tf.int64),
}


def _parse_record(serialized):
    features = tf.io.parse_single_example(serialized, _TFRECORD_FEATURES)
    return features["image/encoded"], tf.cast(features["image/class/label"], tf.int32)


def _scan_records(files):
    """One pass over the labels: (count, num_classes, class names from image/class/text)."""
    spec = {
        "image/class/label": tf.io.FixedLenFeature((), tf.int64),
        "image/class/text": tf.io.FixedLenFeature((), tf.string, default_value=""),
    }
    names, count = {}, 0
    for record in tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, spec)):
        label = int(record["image/class/label"])
        if label < 0:
            raise ValueError(
                f"{files[0]}...: negative image/class/label {label}; expected 0-based labels."
            )
        names.setdefault(label, record["image/class/text"].numpy().decode("utf-8") or str(label))
        count += 1
    return count, names


def tfrecord_data(pattern, val_pattern=None, val_fraction=0.1, seed=0):
    """Reads TFRecord shards matching `pattern` (+ `val_pattern`, or a seeded hold-out)."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"--tfrecord {pattern!r}: no files match.")
    count, names = _scan_records(files)
    if count == 0:
        raise ValueError(f"--tfrecord {pattern!r}: the shards hold no records.")
    records = tf.data.TFRecordDataset(files).map(_parse_record)
    if val_pattern:
        val_files = sorted(glob.glob(val_pattern))
        if not val_files:
            raise FileNotFoundError(f"--val-tfrecord {val_pattern!r}: no files match.")
        val_count, val_names = _scan_records(val_files)
        if val_count == 0:
            raise ValueError(f"--val-tfrecord {val_pattern!r}: the shards hold no records.")
        for label, name in val_names.items():
            names.setdefault(label, name)
        train, val, train_size = (
            records,
            tf.data.TFRecordDataset(val_files).map(_parse_record),
            count,
        )
    else:
        # Hold out records by a seeded hash of their position: stable across runs and workers.
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction!r}: expected a fraction in (0, 1).")
        is_val = np.random.default_rng(seed).random(count) < val_fraction
        flags = tf.data.Dataset.from_tensor_slices(is_val)
        zipped = tf.data.Dataset.zip((records, flags))
        train = zipped.filter(lambda item, flag: tf.logical_not(flag)).map(lambda item, flag: item)
        val = zipped.filter(lambda item, flag: flag).map(lambda item, flag: item)
        train_size, val_count = int((~is_val).sum()), int(is_val.sum())
        if val_count == 0:
            raise ValueError(
                f"--val-fraction {val_fraction:g} holds out none of the {count} records of "
                f"{pattern!r}: raise --val-fraction or give --val-tfrecord."
            )
    num_classes = max(names) + 1
    return TrainingData(
        class_names=[names.get(i, str(i)) for i in range(num_classes)],
        train_source=train,
        val_source=val,
        train_size=train_size,
        val_size=val_count,
        decode=_decode_image_bytes,
        source=run_record.data_source(tfrecord=pattern, val_tfrecord=val_pattern),
    )


# ---------------------------------------------------------------- pipelines


def _options():
    options = tf.data.Options()
    # Element order must not depend on thread timing: resuming skips the first k batches of an
    # epoch, which must be the very batches the interrupted run trained on.
    options.deterministic = True
    # Sharding is done explicitly per input pipeline (see training_batches).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


UNDECODABLE = ": cannot decode the image; skipped"
_HISTORY = 16  # a run of more undecodable files in a row names only its last ones


def _decoded(source, data, transform):
    """`(transform(data.decode(item)), label)` for each `(item, label)` of `source`, in parallel
    and in order, without the elements whose decode failed.

    A class folder's failed files are named, one `warning: PATH: cannot decode the image;
    skipped` line on stderr per failed read. `ignore_errors` alone drops an element without
    saying which (its warning has no file name and is hidden at TF_CPP_MIN_LOG_LEVEL 2), and a
    graph has no try/except: so elements are numbered and carry the paths of the ones before
    them, and a gap in the numbers after `ignore_errors` names the files dropped there. A
    failed last element of a finite `source` has no later element to name it.
    TFRecord items are encoded bytes, not names: they keep the plain `ignore_errors`.
    """
    # Why not check the files up front: a header check passes truncated files, and an
    # end-of-image check refuses valid photos with bytes after the image; decoding every file
    # twice would slow every run. Decoding each file in its own one-element dataset (whose
    # failure ignore_errors turns into a flag) named files too but cost a per-file dataset on
    # every read; the two sequential scans here are cheap string and integer steps.
    if data.decode is not _decode_image_file:
        return source.map(lambda item, label: (transform(data.decode(item)), label),
                          num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)

    def remember(history, element):  # each element carries the paths of the last ones before it
        path, label = element
        return tf.concat([history[1:], [path]], 0), (path, label, history)

    def load(position, element):
        path, label, history = element
        return position, transform(_decode_image_file(path)), label, history

    def report(expected, element):  # positions skipped since the last element: dropped files
        position, image, label, history = element
        dropped = history[tf.maximum(_HISTORY - (position - expected), 0):]
        if tf.size(dropped) > 0:
            # PrintV2 writes the string as it is (tf.print would quote the paths).
            tf.raw_ops.PrintV2(input=tf.strings.reduce_join(
                "warning: " + dropped + UNDECODABLE, separator="\n"), output_stream="stderr")
        return position + 1, (image, label)

    ds = source.scan(tf.fill([_HISTORY], ""), remember).enumerate()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    return ds.scan(tf.constant(0, tf.int64), report)


def training_batches(
    data,
    *,
    epoch,
    batch_size,
    image_size,
    steps,
    augment=None,
    seed=0,
    skip=0,
    num_shards=1,
    shard_index=0,
    deterministic=False,
):
    """Batches `(images, one_hot_labels)` for one epoch: exactly `steps - skip` batches.

    `batch_size` is the batch of this pipeline (per replica under
    `distribute_datasets_from_function`); the example order depends only on (seed, epoch), so
    skipping `skip` batches resumes an
    interrupted epoch where it stopped. Corrupt images are skipped and the source repeats, so
    the epoch always has `steps` batches.
    """
    augment = augment or augment_lib.AugmentConfig()
    augment_image = augment_lib.make_image_augmenter(
        augment, image_size, seed=seed if deterministic else None
    )
    mix = augment_lib.make_batch_mixer(augment, seed=seed if deterministic else None)
    num_classes = data.num_classes

    def to_one_hot(images, labels):
        return images, tf.one_hot(labels, num_classes, dtype=tf.float32)

    ds = data.train_source.shuffle(
        min(data.train_size, 20_000), seed=seed * 100_003 + epoch, reshuffle_each_iteration=False
    )
    # Repeated before decoding: the last file of a pass, if dropped, is named by the next pass.
    ds = ds.shard(num_shards, shard_index).repeat()
    ds = _decoded(ds, data, augment_image)  # corrupt images dropped, never fatal
    ds = ds.batch(batch_size, drop_remainder=True).map(to_one_hot)
    if mix is not None:
        ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.take(steps).skip(skip)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def validation_batches(data, *, batch_size, image_size):
    """Batches `(images, int_labels)` of the validation set, in order, evaluation transform."""

    def transform(image):
        if not data.already_sized:
            image = eval_transform(image, image_size)
        return tf.reshape(image, (image_size, image_size, 3))

    ds = _decoded(data.val_source, data, transform).batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
