"""Image folders as model inputs: calibration data for int8 and held-out data for reports.

Images are found recursively (class sub-folders are fine), in sorted order, and read by
`keras_resnest.images` (the pixels the served graph decodes, under the same pixel limit) with the
official evaluation transform, so calibration sees what the deployed model will see. A file that
cannot be used is named with its reason and skipped.

Example:
    >>> import numpy as np, pathlib, tempfile
    >>> from PIL import Image
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(folder / "a.png")
    >>> load_images(list_images(folder), 32).shape
    (1, 32, 32, 3)
"""
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from keras_resnest.images import FORMAT_NAMES, inspect_image, read_for_eval

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


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


def check_images(directory):
    """`list_images(directory)`, refused before any work unless at least one file's header is
    that of a usable image (`keras_resnest.images.inspect_image`: no pixel is decoded).

    Raises FileNotFoundError or ValueError as `list_images`, and ValueError naming each file's
    reason when none is usable.
    """
    paths = list_images(directory)
    reasons = [(path, inspect_image(path)) for path in paths]
    if all(reason is not None for _, reason in reasons):
        named = "; ".join(f"{path.name}: {reason}" for path, reason in reasons[:3])
        raise ValueError(f"image folder {directory}: none of its {len(paths)} image files can be "
                         f"read ({named}{'; ...' if len(paths) > 3 else ''})")
    return paths


def load_images(paths, image_size, progress=False):
    """Read and transform image files into float32 `[N, size, size, 3]` (RGB 0..255), with
    `keras_resnest.images` (the pixels of the served graph's decoder, whose pixel limit it
    applies) and the official evaluation transform.

    A file that cannot be used is named on stderr with its reason and skipped; ValueError if
    none can.
    """
    images, skipped = [], 0
    for path in tqdm(paths, desc="reading images", unit="image", disable=not progress):
        image, reason = read_for_eval(path, image_size)
        if reason is None:
            images.append(image)
        else:
            skipped += 1
            tqdm.write(f"warning: {path}: {reason}; skipped", file=sys.stderr)
    if not images:
        raise ValueError(f"none of the {skipped} image files can be read (each is named above; "
                         f"expected {FORMAT_NAMES} images)")
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
