"""TFLite latency of quantized ResNeSt vs the float32 TFLite model, same run, same machine.

Converts the model (default ResNeSt-50, 224x224, batch 1) to TFLite float32 and to the other
modes (default full-integer int8), then runs them in the LiteRT interpreter with the XNNPACK
delegate at 2 threads. Rounds alternate between the models so that load from other processes
hits all of them alike. Prints the median latency of each and its ratio to float32
(the target: int8 <= 0.5 x float32).

    python -m benchmarks.tflite_latency [--model resnest50] [--size 224] [--threads 2]
        [--modes int8 fp16 dynamic] [--calibration DIR] [--weights none]

Latency does not depend on the weight values, so random weights (--weights none) are the
default; int8 is then calibrated on synthetic images unless --calibration DIR is given.
"""
import argparse
import time
from pathlib import Path

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["int8"],
                        choices=["fp16", "dynamic", "int8"])
    parser.add_argument("--calibration", type=Path, help="image folder for int8 calibration")
    parser.add_argument("--num-calibration", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs-per-round", type=int, default=5)
    return parser.parse_args()


def synthetic_images(count, size):
    """Smooth random images (calibration ranges closer to photos than uniform noise)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        frequencies, phases = rng.uniform(1, 8, 3), rng.uniform(0, 6.3, 3)
        channels = [128 + 100 * np.sin(2 * np.pi * f * (rows * a + cols * (1 - a)) + p)
                    for f, p, a in zip(frequencies, phases, rng.uniform(0, 1, 3))]
        noisy = np.stack(channels, -1) + rng.normal(0, 10, (size, size, 3))
        images.append(np.clip(noisy, 0, 255))
    return np.stack(images).astype(np.float32)


def main():
    args = parse_args()
    from keras_resnest.export import calibration, report, tflite
    from keras_resnest.model_source import load_model_for_export

    model = load_model_for_export(args.model, args.weights, args.size)
    if args.calibration is not None:
        calibration_images = calibration.load_image_folder(
            args.calibration, args.size, limit=args.num_calibration, progress=True)
    else:
        calibration_images = synthetic_images(args.num_calibration, args.size)

    runners, sizes = {}, {}
    for mode in ["none"] + args.modes:
        start = time.perf_counter()
        flatbuffer = tflite.convert_to_tflite(model, mode, calibration_data=calibration_images)
        print(f"converted {mode:8s} in {time.perf_counter() - start:6.1f} s, "
              f"{len(flatbuffer) / 2**20:7.2f} MiB", flush=True)
        runners[mode] = report.TFLiteClassifier(flatbuffer, num_threads=args.threads)
        sizes[mode] = len(flatbuffer)

    image = calibration_images[0]
    times = {mode: [] for mode in runners}
    for _ in range(args.rounds):
        for mode, runner in runners.items():
            median, _ = runner.latency_ms(image, runs=args.runs_per_round, warmup=1)
            times[mode].append(median)

    baseline = float(np.median(times["none"]))
    print(f"\n{args.model} {args.size}x{args.size}, batch 1, XNNPACK, {args.threads} threads "
          f"({args.rounds} rounds x {args.runs_per_round} runs, interleaved)")
    print(f"{'mode':10s} {'median ms':>10s} {'min ms':>8s} {'size MiB':>9s} {'vs float32':>11s}")
    for mode, values in times.items():
        median = float(np.median(values))
        print(f"{'float32' if mode == 'none' else mode:10s} {median:10.2f} {min(values):8.2f} "
              f"{sizes[mode] / 2**20:9.2f} {median / baseline:10.3f}x")


if __name__ == "__main__":
    main()
