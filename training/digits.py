"""The embedded default dataset: scikit-learn's bundled handwritten digits.

1,797 real 8x8 grey-level scans (values 0..16) of the digits 0-9 ship inside scikit-learn, so
training, tests and `make demo` run with no download. The images are upsampled to RGB at the
requested size and split into train/validation with a fixed, stratified split.

Example:
    >>> from keras_resnest.training.digits import load_digits_dataset
    >>> split = load_digits_dataset(image_size=32)
    >>> split.train_images.shape, split.val_images.shape, split.class_names[:3]
    ((1437, 32, 32, 3), (360, 32, 32, 3), ['0', '1', '2'])
"""
from dataclasses import dataclass

import numpy as np

MIN_SIZE, MAX_SIZE = 32, 64
VAL_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: every run, test and demo sees the same validation images


@dataclass(frozen=True)
class DigitsSplit:
    train_images: np.ndarray  # uint8, (N, S, S, 3), 0..255
    train_labels: np.ndarray  # int32 class indices
    val_images: np.ndarray
    val_labels: np.ndarray
    class_names: list


def load_digits_dataset(image_size=32):
    """Returns the digits as uint8 RGB images of `image_size` px (32..64), split 80/20."""
    if not isinstance(image_size, int) or not MIN_SIZE <= image_size <= MAX_SIZE:
        raise ValueError(
            f"image_size={image_size!r}: the digits dataset is upsampled from 8x8 and supports "
            f"integer sizes {MIN_SIZE}..{MAX_SIZE}."
        )
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    grey = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    # Bilinear upsampling keeps the strokes smooth instead of blocky 8x8 squares.
    upsampled = np.stack(
        [
            np.asarray(Image.fromarray(g).resize((image_size, image_size), Image.BILINEAR))
            for g in grey
        ]
    )
    images = np.repeat(upsampled[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int32)
    train_x, val_x, train_y, val_y = train_test_split(
        images, labels, test_size=VAL_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return DigitsSplit(train_x, train_y, val_x, val_y, [str(d) for d in range(10)])
