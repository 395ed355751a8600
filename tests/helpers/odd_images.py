"""Image files the way attackers and cameras make them, for every test that reads images.

`odd_files()` holds one file of each kind as bytes: 16-bit, palette, alpha, CMYK, animated,
tiny, a header that declares a bomb, truncated, and formats the reader does not take.
`fuzzed_files()` mutates valid files of each format the reader claims (truncated, bytes
flipped, header fields rewritten), seeded, so a failure is reproduced by its name.
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image

# The formats keras_resnest.images claims, with the options that make their variants.
FORMAT_VARIANTS = {
    "JPEG": [("RGB", {"quality": 90}), ("L", {"quality": 75}), ("RGB", {"progressive": True})],
    "PNG": [("RGB", {}), ("RGBA", {}), ("P", {}), ("L", {})],
    "GIF": [("P", {}), ("L", {})],
    "BMP": [("RGB", {}), ("L", {}), ("P", {})],
    "WEBP": [("RGB", {"quality": 80}), ("RGBA", {"lossless": True})],
}


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_header_bomb(width, height):
    """A 57-byte PNG: a valid header declaring `width` x `height` RGB pixels, no image data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def png_bomb(side):
    """A valid 8-bit grey PNG of side x side black pixels: a few hundred kilobytes of zlib."""
    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def picture(height, width, seed=0):
    """A smooth RGB uint8 picture with some texture."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([128 + 100 * np.sin(cols / 7 + rng.uniform(0, 6)),
                      128 + 100 * np.cos(rows / 5 + rng.uniform(0, 6)),
                      128 + 100 * np.sin((rows + cols) / 9)], axis=-1)
    return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)


def encode(image, image_format, **options):
    """`image` (a PIL image or an array) encoded as `image_format` bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def grey16_gradient(height=8, width=256):
    """uint16 `[H, W]` running over 0..65535."""
    return (np.linspace(0, 65535, height * width).reshape(height, width)).astype(np.uint16)


def animated_gif(height=24, width=32):
    """Two frames: red, then blue; readers give the first."""
    frames = [Image.new("RGB", (width, height), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def odd_files():
    """name -> bytes: one file of each kind a camera, a scanner or an attacker makes."""
    rgb = picture(40, 56)
    return {
        "grey16.png": encode(grey16_gradient(), "PNG"),
        "rgba.png": encode(Image.fromarray(rgb).convert("RGBA"), "PNG"),
        "palette.png": encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "grey_alpha.png": encode(Image.fromarray(rgb).convert("LA"), "PNG"),
        "cmyk.jpg": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95),
        "animated.gif": animated_gif(),
        "one_pixel_high.png": encode(picture(1, 64), "PNG"),
        "one_pixel.bmp": encode(picture(1, 1), "BMP"),
        "bomb_header.png": png_header_bomb(20000, 20000),
        "truncated.jpg": encode(rgb, "JPEG")[:300],
        "truncated.qoi": encode(rgb, "QOI")[:40],
        "image.tiff": encode(rgb, "TIFF"),
        "one_bit.bmp": encode(Image.fromarray(rgb).convert("1"), "BMP"),
        "empty.png": b"",
        "text.jpg": b"this is not an image\n",
    }


def valid_files(seed=0):
    """(name, bytes): each variant of each claimed format, at a few small sizes."""
    files = []
    for image_format, variants in FORMAT_VARIANTS.items():
        for index, (mode, options) in enumerate(variants):
            for height, width in ((23, 31), (40, 40)):
                image = Image.fromarray(picture(height, width, seed + index)).convert(mode)
                name = f"{image_format.lower()}_{mode}_{index}_{height}x{width}"
                files.append((name, encode(image, image_format, **options)))
    return files


def fuzzed_files(per_format, seed=0):
    """(name, bytes): `per_format` mutations of the valid files of each claimed format: cut
    short, bytes flipped anywhere, or bytes of the first 64 (the header) rewritten."""
    rng = np.random.default_rng(seed)
    by_format = {}
    for name, data in valid_files(seed):
        by_format.setdefault(name.split("_")[0], []).append((name, data))
    files = []
    for image_format, originals in by_format.items():
        for index in range(per_format):
            name, data = originals[index % len(originals)]
            data = bytearray(data)
            kind = ("truncated", "flipped", "header")[index % 3]
            if kind == "truncated":
                data = data[:int(rng.integers(0, len(data)))]
            elif kind == "flipped":
                for position in rng.integers(0, len(data), int(rng.integers(1, 9))):
                    data[position] ^= int(rng.integers(1, 256))
            else:
                for position in rng.integers(0, min(64, len(data)), int(rng.integers(1, 5))):
                    data[position] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF]))
            files.append((f"{image_format}_{index:03d}_{kind}_{name}", bytes(data)))
    return files
