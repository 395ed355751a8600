"""Checkpoint conversion: time and peak extra memory for a ResNeSt-50-sized checkpoint.

Writes a resnest50 state dict (random weights, ~110 MB) with PyTorch in both torch formats
(legacy, as the official 2020 files, and zip) and as safetensors, then converts each to
`.weights.h5` in a fresh process in which `import torch` is blocked: the conversion is what
`keras-resnest convert` and the first `weights="imagenet"` load run (read without torch,
build the model, assign, write the file atomically).

Measured per format, over `--runs` fresh processes (median):
* seconds of the conversion call (after `import keras_resnest`);
* peak extra memory: the process's peak resident set during the call minus its resident set
  just before (Linux: peak reset through /proc/self/clear_refs), divided by the file size.

Targets: <= 5 s and <= 2x the file size.

    python -m benchmarks.weights_conversion [--model resnest50] [--runs 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_SECONDS = 5.0
TARGET_MEMORY_RATIO = 2.0

# Runs in a fresh interpreter: torch blocked, then one timed conversion.
CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this benchmark")

sys.meta_path.insert(0, BlockTorch())
import keras_resnest
from keras_resnest.weights.pretrained import convert_to_keras

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

model_name, source, output = sys.argv[1:4]
with open("/proc/self/clear_refs", "w") as f:   # resets VmHWM (peak RSS) to the current RSS
    f.write("5")
before = status("VmRSS")
start = time.perf_counter()
convert_to_keras(keras_resnest.create_model(model_name, weights=None), source, output)
seconds = time.perf_counter() - start
peak = status("VmHWM")
assert "torch" not in sys.modules
print(json.dumps({"seconds": seconds, "extra_bytes": peak - before}))
"""


def write_checkpoints(model_name, directory):
    import safetensors.torch
    import torch

    from keras_resnest.weights.reference import build_reference

    torch.manual_seed(0)
    state = build_reference(model_name).state_dict()
    paths = {
        "torch legacy (.pth)": directory / f"{model_name}-legacy.pth",
        "torch zip (.pth)": directory / f"{model_name}-zip.pth",
        "safetensors": directory / f"{model_name}.safetensors",
    }
    torch.save(state, paths["torch legacy (.pth)"], _use_new_zipfile_serialization=False)
    torch.save(state, paths["torch zip (.pth)"])
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()},
                                str(paths["safetensors"]))
    return paths


def measure(model_name, source, output):
    result = subprocess.run([sys.executable, "-c", CHILD, model_name, str(source), str(output)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"conversion failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_checkpoints(args.model, tmp)
        print(f"{args.model}: median of {args.runs} fresh processes, torch blocked "
              f"({os.cpu_count()} CPUs)")
        print("| format | file MB | seconds | peak extra MB | x file size |")
        print("|---|---:|---:|---:|---:|")
        ok = True
        for label, path in paths.items():
            runs = [measure(args.model, path, tmp / "out.weights.h5") for _ in range(args.runs)]
            size = path.stat().st_size
            seconds = statistics.median(r["seconds"] for r in runs)
            extra = statistics.median(r["extra_bytes"] for r in runs)
            ratio = extra / size
            ok &= seconds <= TARGET_SECONDS and ratio <= TARGET_MEMORY_RATIO
            print(f"| {label} | {size / 1e6:.1f} | {seconds:.2f} | {extra / 1e6:.0f} | "
                  f"{ratio:.2f} |")
        print(f"targets: <= {TARGET_SECONDS:g} s, <= {TARGET_MEMORY_RATIO:g}x the file size: "
              + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
