"""The one image reader: bytes, a path or an open file in, uint8 RGB pixels or a reason out.

Every path of the package that reads image files with Python uses it: `predict`,
`predict-batch`, calibration, and the listing of training folders (which reads only the header).
It reads what the serving graph and training's in-graph decoder read (`FORMATS`), and gives the
same pixels they give (JPEG up to the decoders' known rounding of about one grey level):

* 16-bit samples keep their high byte, as TensorFlow's PNG decoder does (PIL would clip a
  16-bit grey PNG to 255 when converting it to RGB);
* palette, alpha, CMYK and greyscale images become RGB as `PIL.Image.convert("RGB")` makes them,
  the official transform's way (alpha is dropped, not composited);
* an animated GIF, PNG or WebP gives its first frame;
* EXIF orientation is ignored, as the official transform ignores it.

A file is never an exception: an unreadable, damaged or unknown file, or one whose header
declares more than `max_pixels` pixels (a decompression bomb: a few kilobytes of PNG may declare
billions), gives a one-line reason instead, and the bomb is refused before any pixel is
allocated.

Example:
    >>> import io, numpy as np
    >>> from PIL import Image
    >>> data = io.BytesIO()
    >>> Image.fromarray(np.zeros((30, 40), np.uint16)).save(data, "PNG")
    >>> read_image(data.getvalue()).pixels.shape
    (30, 40, 3)
    >>> read_image(b"not an image").reason
    'not a JPEG, PNG, GIF, BMP or WebP image'
"""
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np

# What the serving graph decodes (tf.io.decode_image and decode_jpeg), and so what training
# reads: a file of any other format would get an answer from `predict` and none from the model
# it serves as.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
FORMAT_NAMES = "JPEG, PNG, GIF, BMP or WebP"
# Far above real photos (a 48 MP camera), far below the decompression bombs a few hundred
# kilobytes of PNG can carry (15000x15000: 675 MB decoded as RGB, more inside the decoder).
DEFAULT_MAX_PIXELS = 50_000_000
# PIL's modes of samples wider than 8 bits; each keeps its high byte (see `_to_rgb`).
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Enough of the file for every format's signature and a BMP's info header fields.
_PREFIX_BYTES = 34


@dataclass(frozen=True)
class ImageRead:
    """What `read_image` made of a file: `pixels` (uint8 `[H, W, 3]`) or a `reason`."""

    pixels: np.ndarray | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def read_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageRead:
    """Decode one image into uint8 RGB pixels, or say why it cannot be used.

    Args:
        source (bytes | str | os.PathLike | typing.BinaryIO): the encoded image, its path, or a
            binary file open at its start (seekable).
        max_pixels (int): refuse images whose header declares more pixels, before decoding.
            Defaults to `DEFAULT_MAX_PIXELS`.

    Returns:
        ImageRead: `pixels` (uint8 `[H, W, 3]`) with `reason` None, or `reason` (one line).
    """
    return _with_image(source, max_pixels, lambda image: ImageRead(pixels=_to_rgb(image)))


def inspect_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why `source` cannot be used, from its header only (no pixel is decoded), or None.

    A None does not promise that decoding succeeds (a truncated file has a valid header); it
    promises a known format and a size within `max_pixels`. Arguments as `read_image`.
    """
    return _with_image(source, max_pixels, lambda image: ImageRead()).reason


def crop_reason(height: int, width: int, image_size: int) -> str | None:
    """Why a `height` x `width` image has no official evaluation crop of `image_size`, or None.

    The official crop keeps `image_size / (image_size + 32)` of the short side; on a 1-pixel
    side at `image_size` 32 that rounds to nothing, and PIL's resize refuses an empty image.
    """
    from keras_resnest.preprocessing import static_center_crop_box

    _, _, crop_height, crop_width = static_center_crop_box(height, width, image_size)
    if crop_height >= 1 and crop_width >= 1:
        return None
    return (f"{width}x{height} pixels is too small for the {image_size}-pixel evaluation crop "
            "(it crops to nothing)")


def read_for_eval(source, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS):
    """`read_image`, then the official evaluation transform: (float32 `[size, size, 3]`, None)
    or (None, reason). Never raises for a bad file.

    Args:
        source (bytes | str | os.PathLike | typing.BinaryIO): as `read_image`.
        image_size (int): side of the evaluation crop.
        max_pixels (int): as `read_image`. Defaults to `DEFAULT_MAX_PIXELS`.
    """
    from keras_resnest.preprocessing import eval_transform

    read = read_image(source, max_pixels)
    if not read.ok:
        return None, read.reason
    reason = crop_reason(*read.pixels.shape[:2], image_size)
    if reason is not None:
        return None, reason
    return eval_transform(read.pixels, image_size).numpy(), None


def _with_image(source, max_pixels, use):
    """Open `source` as one of `FORMATS`, check its declared size, then `use(image)`; every
    failure becomes `ImageRead(reason=...)`."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _open_and_use(io.BytesIO(source), max_pixels, use)
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:
                return _open_and_use(handle, max_pixels, use)
        return _open_and_use(source, max_pixels, use)
    except FileNotFoundError:
        return ImageRead(reason="no such file")
    except IsADirectoryError:
        return ImageRead(reason="a folder, not an image file")
    except MemoryError:
        return ImageRead(reason="not enough memory to decode the image")
    # Decoders raise what their authors chose (OSError, ValueError, SyntaxError, struct.error,
    # EOFError, ...): for one file, any of them means the same, this file cannot be used.
    except Exception as error:  # noqa: BLE001
        return ImageRead(reason=f"cannot decode the image ({_one_line(error)})")


def _open_and_use(handle, max_pixels, use):
    prefix = handle.read(_PREFIX_BYTES)
    if not prefix:
        return ImageRead(reason="empty file")
    image = _open_as_known_format(handle, prefix[:16])
    if image is None:
        return ImageRead(reason=_unknown_format_reason(prefix[:16]))
    with image:
        if image.format == "BMP":
            reason = _bmp_reason(prefix)
            if reason is not None:
                return ImageRead(reason=reason)
        width, height = image.size
        if width * height > max_pixels:
            return ImageRead(reason=f"declares {width}x{height} pixels; the limit is "
                                    f"{max_pixels} pixels")
        if width < 1 or height < 1:
            return ImageRead(reason=f"declares {width}x{height} pixels")
        with warnings.catch_warnings():
            # PIL warns of what it recovers from (e.g. a palette without transparency data):
            # the pixels are what the user gets either way.
            warnings.simplefilter("ignore")
            image.seek(0)  # the first frame of an animation
            return use(image)


def _bmp_reason(prefix):
    """Why TensorFlow's BMP decoder, and so the serving graph, cannot read this BMP, or None:
    it reads uncompressed (or bit-field) BMPs of 8, 24 or 32 bits per pixel with a Windows
    info header, and PIL reads more; one reader must read only what both read."""
    info_size = int.from_bytes(prefix[14:18], "little")
    bits = int.from_bytes(prefix[28:30], "little")
    compression = int.from_bytes(prefix[30:34], "little")
    if info_size < 40:
        return "an OS/2 BMP; expected a Windows BMP of 8, 24 or 32 bits per pixel"
    if bits not in (8, 24, 32) or compression not in (0, 3):
        what = f"{bits} bits per pixel" + (", compressed" if compression not in (0, 3) else "")
        return f"a BMP of {what}; expected an uncompressed BMP of 8, 24 or 32 bits per pixel"
    return None


def _open_as_known_format(handle, prefix):
    """The PIL image of one of `FORMATS`, header parsed and nothing decoded; None if none fits.

    PIL's `Image.open` does this too but runs its own bomb check first, which raises without
    the size; calling the registered plugin factories as it does lets `_open_and_use` name the
    size and apply our limit.
    """
    from PIL import Image

    Image.preinit()  # registers the plugins of FORMATS (all but WEBP) ...
    if not all(name in Image.OPEN for name in FORMATS):
        Image.init()  # ... and this the rest
    for name in FORMATS:
        factory, accept = Image.OPEN[name]
        accepted = accept(prefix) if accept else True
        if accepted and not isinstance(accepted, str):
            handle.seek(0)
            return factory(handle, "")
    return None


def _unknown_format_reason(prefix):
    """The reason for a file of none of `FORMATS`, naming its format where PIL knows it."""
    from PIL import Image

    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        try:
            known = name not in FORMATS and accept is not None and accept(prefix) is True
        except Exception:  # noqa: BLE001  (a plugin's check on 16 bytes: not worth a failure)
            known = False
        if known:
            return f"a {name} image; expected a {FORMAT_NAMES} image"
    return f"not a {FORMAT_NAMES} image"


def _to_rgb(image):
    """uint8 RGB `[H, W, 3]` of a PIL image, 16-bit samples reduced to their high byte."""
    from PIL import Image

    if image.mode in _WIDE_MODES:
        samples = np.asarray(image, dtype=np.int64)
        high_bytes = (np.clip(samples, 0, 65535) >> 8).astype(np.uint8)
        image = Image.fromarray(high_bytes, mode="L")
    elif image.mode == "F":
        raise ValueError("32-bit float samples; expected 8 or 16 bits per sample")
    pixels = np.asarray(image.convert("RGB"))
    return pixels


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
