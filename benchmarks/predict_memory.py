"""Peak memory of `keras-resnest predict` against the number of files: it streams, so the peak
must not grow with the count.

Each count runs the command in a fresh process (a ResNeSt-14d without weights: the weights do
not change the memory of the images) over that many copies of a few small PNGs, and reads the
process's peak resident memory. The last column is what the images alone would take if they
were decoded into one array first, as `predict` did before it streamed.

    python -m benchmarks.predict_memory --counts 100 1000 10000 --size 224
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import host_cpu_flags, png_file, run_measured


def write_files(folder, count):
    """`count` PNG files of 96x128 pixels (8 distinct pictures, hard-linked)."""
    originals = []
    for index in range(8):
        path = folder / f"original_{index}.png"
        path.write_bytes(png_file(96, 128, seed=index))
        originals.append(path)
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}.png"
        path.hardlink_to(originals[index % len(originals)])
        paths.append(path)
    return paths


def peak_rss_of_predict(paths, size, batch_size):
    """(peak RSS in MB, seconds) of one `keras-resnest predict` process over `paths`."""
    # The paths go through a file list: 10,000 arguments would pass the command-line limit
    # on some systems, so the child reads them itself.
    folder = Path(tempfile.mkdtemp())
    listing = folder / "paths.txt"
    listing.write_text("\n".join(map(str, paths)))
    code = ("import sys, keras_resnest_cli; paths = open(sys.argv[1]).read().split(); "
            "sys.exit(keras_resnest_cli.main(['predict', *paths, *sys.argv[2:]]))")
    try:
        peak, seconds, _ = run_measured(
            [sys.executable, "-c", code, str(listing), "--model", "resnest14d", "--weights",
             "none", "--size", str(size), "--batch-size", str(batch_size), "--top", "1"])
    finally:
        shutil.rmtree(folder)
    return peak, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print(f"host: {host_cpu_flags()}")
    print(f"{'files':>7} {'peak RSS MB':>12} {'seconds':>8} {'images/s':>9} "
          f"{'one array MB':>13}")
    folder = Path(tempfile.mkdtemp(prefix="predict_memory_"))
    try:
        paths = write_files(folder, max(args.counts))
        for count in sorted(args.counts):
            peak, seconds = peak_rss_of_predict(paths[:count], args.size, args.batch_size)
            one_array = count * args.size * args.size * 3 * 4 / 2 ** 20
            print(f"{count:>7} {peak:>12.0f} {seconds:>8.1f} {count / seconds:>9.1f} "
                  f"{one_array:>13.0f}", flush=True)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
