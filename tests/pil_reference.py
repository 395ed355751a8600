"""The official evaluation transform as the official `scripts/torch/verify.py` writes it with
PIL (ECenterCrop), line for line: the reference the tests hold
`keras_resnest.preprocessing.eval_transform` (the package's one implementation) to."""
import numpy as np
from PIL import Image

CROP_MARGIN = 32


def official_eval_crop(image, size):
    """A PIL image -> float32 RGB (size, size, 3), 0..255: crop `size / (size + 32)` of the
    short side at `int(round(...))`, then resize with `Image.BICUBIC`."""
    image = image.convert("RGB")
    width, height = image.size
    crop = float(size) / (size + CROP_MARGIN) * min(width, height)
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    return np.asarray(image.resize((size, size), Image.BICUBIC), "float32")
