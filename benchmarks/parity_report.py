"""Prints max|keras - torch| / max|torch| of every model against the official PyTorch ResNeSt.

Random weights with random BatchNorm statistics (see tests/torch_reference.py), float32.
The tests assert the same bound; this script gives the figures for the README.

    python benchmarks/parity_report.py [--height 45 --width 67] [--models resnest50 ...]
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=45)
    parser.add_argument("--width", type=int, default=67)
    parser.add_argument("--models", nargs="*")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_resnest
    from tests import torch_reference as ref

    print(f"{'model':26s} {'params':>12s} {'rel. error':>11s}  (input {args.height}x{args.width})")
    for name in args.models or keras_resnest.list_models():
        torch_model = ref.build_randomized(name)
        model = keras_resnest.create_model(name, weights=None, classifier_activation=None)
        keras_resnest.load_torch_state_dict(model, ref.state_dict_numpy(torch_model))
        images = ref.random_images(2, args.height, args.width, seed=1)
        error = ref.relative_error(model.predict(images, verbose=0),
                                   ref.logits(torch_model, images))
        params = sum(p.numel() for p in torch_model.parameters())
        print(f"{name:26s} {params:>12,d} {error:>11.2e}", flush=True)


if __name__ == "__main__":
    main()
