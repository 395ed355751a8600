"""Prints how far the in-graph decode + evaluation transform is from the official PIL one.

For each case of tests/test_export_image_transform.py (`CASES` below repeats them: same images,
sizes and formats): the
largest difference in grey levels and the share of pixel values (H x W x 3) that differ at all,
then the worst of each. The test asserts bars at docs/export.md's claim, just above these figures.

    python -m benchmarks.image_transform_report
"""
import io
import os

import numpy as np

from benchmarks.common import encode, natural_image

# (image shape, output size, file format): the cases of tests/test_export_image_transform.py.
CASES = [
    ((97, 131), 64, "JPEG"), ((97, 131), 64, "PNG"), ((300, 400), 224, "JPEG"),
    ((480, 333), 224, "PNG"), ((50, 60), 128, "JPEG"), ((64, 64), 64, "PNG"),
    ((200, 120), 96, "PNG"),
]


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from PIL import Image

    from keras_resnest.export import image_transform

    # The PIL pipeline `keras-resnest predict` runs: the official ECenterCrop.
    from keras_resnest.weights.reference import official_eval_crop

    print(f"{'image':>10s} {'size':>5s} {'format':>6s} {'max diff':>9s} {'values differing':>17s}")
    worst_max, worst_share = 0.0, 0.0
    for shape, size, image_format in CASES:
        image = natural_image(*shape, seed=sum(shape))
        options = {"quality": 90} if image_format == "JPEG" else {}
        data = encode(image, image_format, **options)
        expected = official_eval_crop(Image.open(io.BytesIO(data)), size)
        actual = image_transform.decode_and_transform(tf.constant(data), size).numpy()
        difference = np.abs(actual - expected)
        share = float(np.mean(difference > 0))
        worst_max, worst_share = max(worst_max, difference.max()), max(worst_share, share)
        print(f"{shape[0]:>4d}x{shape[1]:<5d} {size:>5d} {image_format:>6s} "
              f"{difference.max():>9.1f} {100 * share:>16.3f}%", flush=True)
    print(f"worst: {worst_max:.1f} grey level(s), {100 * worst_share:.3f}% of pixel values")


if __name__ == "__main__":
    main()
