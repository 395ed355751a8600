"""`keras-resnest convert`.

    keras-resnest convert resnest50-528c19ca.pth --model resnest50 -o resnest50.weights.h5
    keras-resnest convert model.safetensors --model resnest50d -o r50.weights.h5 --check

TensorFlow is imported by the handlers, not at registration, so `--help` stays fast.
"""
import os

CHECK_SEED = 0


def register(subparsers):
    convert = subparsers.add_parser(
        "convert",
        help="convert a PyTorch/safetensors/npz checkpoint to Keras .weights.h5 (no torch)",
        description="Convert a ResNeSt checkpoint (.pth/.pt in either torch format, "
        ".safetensors, .npz; official or timm names) to a Keras .weights.h5 file, without "
        "torch, and print what was mapped.")
    convert.add_argument("source", metavar="SRC", help="checkpoint to convert")
    convert.add_argument("--model", required=True, metavar="NAME",
                         help="model name (keras_resnest or timm, e.g. resnest50, resnest50d)")
    convert.add_argument("-o", "--output", required=True, metavar="OUT.weights.h5",
                         help="Keras weights file to write")
    convert.add_argument("--check", action="store_true",
                         help="compare the result with the official PyTorch model (needs "
                         'torch and resnest: pip install "keras-resnest[reference]")')
    convert.set_defaults(func=run_convert)


def _model_name(name):
    """The canonical name of `--model` (aliases such as resnest50d included), or ValueError."""
    from keras_resnest.models import resolve_model_name

    return resolve_model_name(name)


# --------------------------------------------------------------------------------------------
# convert


def convert_checkpoint(source, model_name, output):
    """Converts `source` to `output` (.weights.h5). Returns a dict for the report."""
    from keras_resnest.models import create_model
    from keras_resnest.weights.checkpoints import is_torch_free_checkpoint
    from keras_resnest.weights.pretrained import convert_to_keras, sha256_file

    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such checkpoint")
    if not is_torch_free_checkpoint(source):
        raise ValueError(f"{source}: expected a .pth/.pt, .safetensors or .npz checkpoint")
    model = create_model(model_name, weights=None)
    report = convert_to_keras(model, source, output)
    return {
        "model": model_name,
        "source": source,
        "tensors": report.tensors,
        "parameters": report.parameters,
        "model_parameters": int(model.count_params()),
        "skipped": list(report.skipped),
        "output": os.path.abspath(output),
        "bytes": os.path.getsize(output),
        "sha256": sha256_file(output),
    }


def check_conversion(model_name, source, output, image_size=None, seed=CHECK_SEED):
    """Relative error of the converted file against the official model on random images."""
    import numpy as np

    from keras_resnest.models import MODEL_CONFIGS, create_model
    from keras_resnest.weights import read_state_dict
    from keras_resnest.weights.reference import reference_logits, relative_error

    size = image_size or MODEL_CONFIGS[model_name].default_size
    images = np.random.RandomState(seed).uniform(0, 255, (1, size, size, 3)).astype("float32")
    model = create_model(model_name, weights=output, classifier_activation=None)
    actual = model.predict(images, verbose=0)
    expected = reference_logits(model_name, read_state_dict(source), images)
    return relative_error(actual, expected), size


def run_convert(args):
    from keras_resnest.weights.reference import PARITY_TOLERANCE, torch_available

    model_name = _model_name(args.model)
    if args.check and not torch_available():
        # Known before any work: refuse instead of converting and then skipping the check.
        raise ValueError("--check needs torch and the official resnest package: "
                         'pip install "keras-resnest[reference]" (or run without --check)')
    result = convert_checkpoint(args.source, model_name, args.output)
    print(f"converted {result['source']} -> {result['output']}")
    print(f"  model       {model_name}")
    print(f"  tensors     {result['tensors']} mapped"
          + (f" ({', '.join(result['skipped'])} skipped)" if result["skipped"] else ""))
    print(f"  parameters  {result['parameters']:,} assigned "
          f"(model: {result['model_parameters']:,})")
    print(f"  output      {result['output']} ({result['bytes'] / 1e6:.1f} MB)")
    print(f"  sha256      {result['sha256']}")
    if not args.check:
        return 0
    error, size = check_conversion(model_name, args.source, args.output)
    verdict = "OK" if error <= PARITY_TOLERANCE else "FAILED"
    print(f"  check       max|keras - torch| / max|torch| = {error:.2e} on a random "
          f"{size}x{size} image (bar {PARITY_TOLERANCE:.0e}): {verdict}")
    return 0 if verdict == "OK" else 1
