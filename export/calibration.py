"""Image folders as model inputs: calibration data for int8 and held-out data for reports.

Images are found recursively (class sub-folders are fine), in sorted order, and prepared with
exactly the transform the served graph uses (`image_transform`: decode, official crop, bicubic
resize), so calibration sees what the deployed model will see.

Example:
    >>> import numpy as np, pathlib, tempfile
    >>> from PIL import Image
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(folder / "a.png")
    >>> load_images(list_images(folder), 32).shape
    (1, 32, 32, 3)
"""
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from keras_resnest.export import image_transform
from keras_resnest.quiet_start import captured_stderr

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_images(directory, limit=None):
    """Sorted image files under `directory` (recursive), at most `limit` of them.

    Raises FileNotFoundError for a missing folder and ValueError for one without images.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"image folder {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a folder; expected a folder of images")
    paths = sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise ValueError(
            f"image folder {directory} contains no images (expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"the number of images must be at least 1, got {limit}")
        paths = paths[: int(limit)]
    return paths


def load_images(paths, image_size, progress=False):
    """Decode and transform image files into float32 `[N, size, size, 3]` (RGB 0..255).

    Raises ValueError naming the first file that cannot be decoded.
    """
    transform = tf.function(
        lambda data: image_transform.decode_and_transform(data, image_size),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    # Traced here, so that what the loop captures from descriptor 2 is the decoding's own.
    transform.get_concrete_function()
    images = []
    for path in tqdm(paths, desc="reading images", unit="image", disable=not progress):
        # libjpeg writes its complaints to descriptor 2; this file is named instead.
        with captured_stderr() as decoder:
            try:
                images.append(transform(tf.constant(Path(path).read_bytes())).numpy())
            except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
                # Drop TF's "{{function_node ...}}" prefix: the decoder's own words are enough.
                message = re.sub(r"\{\{[^}]*\}\}", "", str(error)).strip() or "bad data"
                message = message.splitlines()[0]
                raise ValueError(
                    f"cannot read image {path}: {message} (expected a JPEG, PNG, BMP or GIF file)"
                ) from None
        if decoder.text.strip():
            tqdm.write(f"warning: {path}: the decoder reported damaged image data; using what "
                       "it recovered", file=sys.stderr)
    return np.stack(images).astype(np.float32)


def load_image_folder(directory, image_size, limit=None, progress=False):
    """`load_images(list_images(directory, limit), image_size)`."""
    return load_images(list_images(directory, limit), image_size, progress=progress)


def as_image_array(source, image_size, limit=None, progress=False):
    """Images from a folder path, a numpy array or a `tf.data.Dataset`, as float32 NHWC.

    A dataset may yield single images `[H, W, 3]`, batches `[N, H, W, 3]`, or `(images, labels)`
    pairs (labels are ignored); its images must already be `image_size` square, RGB 0..255.
    """
    if isinstance(source, (str, Path)):
        return load_image_folder(source, image_size, limit, progress)
    if isinstance(source, tf.data.Dataset):
        batches = []
        count = 0
        for element in source.as_numpy_iterator():
            images = element[0] if isinstance(element, tuple) else element
            images = images[None] if images.ndim == 3 else images
            batches.append(images)
            count += len(images)
            if limit is not None and count >= limit:
                break
        if not batches:
            raise ValueError("the calibration dataset yielded no images")
        array = np.concatenate(batches)
    else:
        array = np.asarray(source)
    array = array[:limit] if limit is not None else array
    expected = (image_size, image_size, 3)
    if array.ndim != 4 or array.shape[1:] != expected or len(array) == 0:
        raise ValueError(
            f"calibration images must have shape (N, {image_size}, {image_size}, 3) with N >= 1, "
            f"got {array.shape}"
        )
    return array.astype(np.float32)
