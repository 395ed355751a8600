"""SavedModel export with the two serving signatures TF-Serving clients need.

* `serving_default`: input `image`, float32 `[None, H, W, 3]` RGB 0..255 (already cropped and
  resized); outputs `probabilities` `[None, classes]`, and the top-5 `classes` (int64),
  `scores` (float32) and `labels` (string).
* `serving_bytes`: input `image_bytes`, a batch `[None]` of encoded JPEG/PNG/BMP/GIF/WebP
  strings; decoding and the official evaluation transform run inside the graph
  (`keras_resnest.export.image_transform`), then the same outputs. A REST client sends
  `{"signature_name": "serving_bytes", "instances": [{"b64": "..."}]}`. An image whose header
  announces more than `max_pixels` pixels is refused with InvalidArgument before it is decoded
  (a 0.2 MB PNG can hold 15000x15000 pixels; decoding it took 19 s and 4 GB, docs/export.md);
  the limit is kept in the
  SavedModel: `tf.saved_model.load(path).max_pixels[0]`.

Class names ship as the asset `assets/labels.txt` (one per line, line i = class i), read by a
lookup table in the graph. The SavedModel needs neither Python nor keras_resnest to run.

Example:
    >>> import keras_resnest, tempfile, tensorflow as tf
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3))
    >>> path = export_saved_model(model, tempfile.mkdtemp() + "/resnest14d")
    >>> sorted(tf.saved_model.load(str(path)).signatures)
    ['serving_bytes', 'serving_default']
"""
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from keras_resnest import classifier
from keras_resnest.export import image_transform
from keras_resnest.export.output_paths import replace_directory
from keras_resnest.imagenet import imagenet_classes
from keras_resnest.images import DEFAULT_MAX_PIXELS

FLOAT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
FLOAT_INPUT = "image"
BYTES_INPUT = "image_bytes"
LABELS_ASSET = "labels.txt"
TOP_K = 5


def default_labels(num_classes):
    """ImageNet class names for 1000-class models, else the class indices as strings."""
    if num_classes == len(imagenet_classes()):
        return [name for _, name in imagenet_classes()]
    return [str(index) for index in range(num_classes)]


def check_labels(labels, num_classes):
    labels = [str(label) for label in labels]
    if len(labels) != num_classes:
        raise ValueError(f"got {len(labels)} labels for a model with {num_classes} classes")
    bad = [label for label in labels if "\n" in label or "\r" in label]
    if bad:
        raise ValueError(f"labels must be single lines; got {bad[0]!r}")
    return labels


def check_max_pixels(max_pixels):
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(
            f"max_pixels must be a positive whole number of pixels, got {max_pixels!r}")
    return max_pixels


def build_export_archive(model, image_size, labels, labels_path,
                         max_pixels=DEFAULT_MAX_PIXELS):
    """An ExportArchive with both serving signatures; `labels` are written to `labels_path`."""
    head = classifier.classifier_head(model)
    num_classes = classifier.num_classes(model)
    top_k = min(TOP_K, num_classes)
    Path(labels_path).write_text("\n".join(labels) + "\n", encoding="utf-8")
    # The table reads the file through a tracked asset, so the file is copied into assets/.
    label_table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(labels_path),
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        ),
        default_value="",
    )

    def named_outputs(images):
        _, probabilities = head(images, training=False)
        scores, classes = tf.math.top_k(probabilities, k=top_k)
        classes = tf.cast(classes, tf.int64)
        return {
            "probabilities": probabilities,
            "classes": classes,
            "scores": scores,
            "labels": label_table.lookup(classes),
        }

    def serve_images(image):
        return named_outputs(image)

    # Saved with the model (a variable collection), so the limit a SavedModel enforces can be
    # read back from it.
    pixel_limit = tf.Variable(max_pixels, dtype=tf.int64, trainable=False, name="max_pixels")

    def serve_image_bytes(image_bytes):
        return named_outputs(image_transform.decode_and_transform_batch(
            image_bytes, image_size, max_pixels=pixel_limit))

    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.track(label_table)
    archive.add_variable_collection("max_pixels", [pixel_limit])
    # Registered first, so it is also the archive's default; the name makes that explicit.
    archive.add_endpoint(
        FLOAT_SIGNATURE,
        serve_images,
        input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=FLOAT_INPUT)
        ],
    )
    archive.add_endpoint(
        BYTES_SIGNATURE,
        serve_image_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    return archive


def write_saved_model(model, directory, *, image_size=None, labels=None,
                      max_pixels=DEFAULT_MAX_PIXELS):
    """Write the SavedModel into `directory` (which must not exist); returns the image size."""
    check_max_pixels(max_pixels)
    image_size = classifier.resolve_image_size(model, image_size)
    num_classes = classifier.num_classes(model)
    labels = check_labels(default_labels(num_classes) if labels is None else labels, num_classes)
    with tempfile.TemporaryDirectory() as scratch:
        archive = build_export_archive(model, image_size, labels, Path(scratch) / LABELS_ASSET,
                                       max_pixels)
        archive.write_out(str(directory), verbose=False)
    return image_size


def export_saved_model(model, path, *, image_size=None, labels=None, overwrite=False,
                       max_pixels=DEFAULT_MAX_PIXELS):
    """Export `model` as a SavedModel at `path` with the `serving_default` and `serving_bytes`
    signatures.

    Args:
        model (keras.Model): a Keras classifier (ResNeSt or any model with a Dense "fc" logits
            layer) taking float RGB 0..255 and normalising inside (include_preprocessing=True).
        path (str or Path): output directory. Written to a temporary sibling first, then renamed.
        image_size (int or None): square input size; defaults to the size the model was built for.
        labels (list of str or None): class names (default: ImageNet names for 1000 classes, else
            "0", "1", ...).
        overwrite (bool): replace an existing non-empty `path`.
        max_pixels (int): `serving_bytes` refuses images with more pixels (read from the header,
            before decoding); default 50 million.

    Returns:
        Path: the SavedModel.
    """
    check_max_pixels(max_pixels)
    path = Path(path)
    with replace_directory(path, overwrite=overwrite) as staging:
        write_saved_model(model, staging, image_size=image_size, labels=labels,
                          max_pixels=max_pixels)
    return path
