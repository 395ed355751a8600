"""Peak memory of `keras-resnest train` on a small folder, with and without a decompression bomb
among its images: the bomb is named and skipped from its header, so the peaks must match.

The bomb is a real 20000x20000 grey PNG (about 0.4 MB of zlib, 1.2 GB as RGB); each run is a
fresh process, ResNeSt-14d without weights, one epoch at 32 px.

    python -m benchmarks.train_bomb_memory
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import host_cpu_flags, png_bomb, png_file, run_measured


def write_folder(root, per_class, bomb):
    for label in ("a", "b"):
        folder = root / "train" / label
        folder.mkdir(parents=True)
        for index in range(per_class):
            (folder / f"{index}.png").write_bytes(png_file(40, 48, seed=index))
    if bomb is not None:
        (root / "train" / "a" / "bomb.png").write_bytes(bomb)


def run_train(data, output):
    """(peak RSS MB of the child process, seconds, its stderr)."""
    return run_measured(
        [sys.executable, "-m", "keras_resnest_cli", "train", "--model", "resnest14d", "--data",
         str(data), "--epochs", "1", "--image-size", "32", "--batch-size", "8", "-o", str(output)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=18)
    args = parser.parse_args(argv)
    print(f"host: {host_cpu_flags()}")
    bomb = png_bomb(20000)
    work = Path(tempfile.mkdtemp(prefix="train_bomb_"))
    try:
        rows = []
        for name, extra in (("without", None), ("with", bomb)):
            data = work / name
            write_folder(data, args.per_class, extra)
            peak, seconds, stderr = run_train(data, work / f"run_{name}")
            named = [line for line in stderr.splitlines() if "bomb.png" in line]
            rows.append((name, peak, seconds, named))
        print(f"bomb: {len(bomb)} bytes declaring 20000x20000 pixels, "
              f"{2 * args.per_class} other images")
        print(f"{'run':>8} {'peak RSS MB':>12} {'seconds':>8}  bomb named")
        for name, peak, seconds, named in rows:
            print(f"{name:>8} {peak:>12.0f} {seconds:>8.1f}  {named or '-'}")
        print(f"peak ratio with/without: {rows[1][1] / rows[0][1]:.3f}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
