"""Prints the TFLite table of docs/export.md: each quantization mode against its Keras model.

The models, images and conversions are those of tests/test_export_tflite.py, which asserts
bars just above these figures (benchmarks.common builds the same models as the tests' helpers):

* float32, fp16, dynamic: ResNeSt-14d at 64 px with official-init weights and random BN state
  (`small_model`), on the test's 6 images (5 smooth natural-like, 1 noise);
* int8 (int8 I/O): ResNeSt-14d at 32 px trained on the digits (`digits_model`),
  calibrated on 64 training images from a tf.data dataset, on the 360 held-out images; also
  the accuracy of both models against the true labels.

    python -m benchmarks.tflite_report
"""
import os

import numpy as np

from benchmarks.common import digits_model, digits_split, natural_image, small_model


def float_test_images():
    """The `images` fixture of tests/test_export_tflite.py."""
    natural = [natural_image(64, 64, seed) for seed in range(5)]
    noise = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3))
    return np.concatenate([np.stack(natural), noise]).astype(np.float32)


def row(mode, result, float32_size, extra=""):
    return (f"{mode:18s} {result['num_images']:>6d} {result['max_rel_logit_diff']:>10.2e} "
            f"{100 * result['top1_agreement']:>8.1f}% {result['size_bytes'] / 2**20:>8.2f} "
            f"{result['size_bytes'] / float32_size:>7.3f} {extra}")


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from keras_resnest.export import report, tflite

    print(f"{'mode':18s} {'images':>6s} {'max rel.':>10s} {'top-1 agr.':>9s} {'MiB':>8s} "
          f"{'size':>7s}")
    print(f"{'':18s} {'':>6s} {'logit diff':>10s} {'':>9s} {'':>8s} {'/fp32':>7s}")
    model, images = small_model(), float_test_images()
    float32_size = None
    for mode in ("none", "fp16", "dynamic"):
        flatbuffer = tflite.convert_to_tflite(model, mode)
        float32_size = float32_size or len(flatbuffer)
        result = report.tflite_report(flatbuffer, model, images, latency_runs=3)
        print(row("float32" if mode == "none" else mode, result, float32_size), flush=True)

    digits = digits_model()
    train_images, _, test_images, test_labels = digits_split()
    digits_float32 = len(tflite.convert_to_tflite(digits, "none"))
    dataset = tf.data.Dataset.from_tensor_slices(train_images[:64]).batch(16)
    flatbuffer = tflite.convert_to_tflite(digits, "int8", calibration_data=dataset,
                                          int8_io="int8")
    result = report.tflite_report(flatbuffer, digits, test_images, latency_runs=3)
    runner = report.TFLiteClassifier(flatbuffer)
    int8_accuracy = np.mean([runner(image)["logits"].argmax() == label
                             for image, label in zip(test_images, test_labels)])
    float_accuracy = np.mean(digits.predict(test_images, verbose=0).argmax(-1) == test_labels)
    print(row("int8 (int8 I/O)", result, digits_float32,
              f"accuracy {100 * int8_accuracy:.1f}% vs float {100 * float_accuracy:.1f}%"))


if __name__ == "__main__":
    main()
