"""`keras-resnest convert` and `keras-resnest predict`.

    keras-resnest convert resnest50-528c19ca.pth --model resnest50 -o resnest50.weights.h5
    keras-resnest convert model.safetensors --model resnest50d -o r50.weights.h5 --check
    keras-resnest predict cat.jpg dog.png --model resnest50 --top 5

TensorFlow is imported by the handlers, not at registration, so `--help` stays fast.
"""
import os
import sys

# Official evaluation transform (scripts/torch/verify.py, ECenterCrop): crop
# size / (size + CROP_MARGIN) of the short side, then a bicubic resize to size x size.
CROP_MARGIN = 32
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
                         help="compare the result with the official PyTorch model (needs torch "
                         "and resnest); skipped with a note when torch is not importable")
    convert.set_defaults(func=run_convert)

    predict = subparsers.add_parser(
        "predict", help="top ImageNet classes of images",
        description="Classify images with the official evaluation transform (centre crop "
        "of size/(size+32) of the short side, bicubic resize).")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--model", default="resnest50", metavar="NAME",
                         help="model name (default resnest50)")
    predict.add_argument("--weights", default="imagenet",
                         help="'imagenet' (default), a checkpoint or a Keras weights file")
    predict.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    predict.add_argument("--size", type=int, default=None,
                         help="evaluation crop (default: the model's, e.g. 224 for resnest50)")
    predict.set_defaults(func=run_predict)


def _model_name(name):
    from keras_resnest.models import list_models
    from keras_resnest.weights.pretrained import resolve_model_name

    resolved = resolve_model_name(name)
    if resolved not in list_models():
        raise ValueError(f"--model {name!r}: unknown model; expected one of "
                         f"{', '.join(list_models())} (or a timm name such as resnest50d)")
    return resolved


# --------------------------------------------------------------------------------------------
# convert


def convert_checkpoint(source, model_name, output):
    """Converts `source` to `output` (.weights.h5). Returns a dict for the report."""
    from keras_resnest.weights.checkpoints import is_torch_free_checkpoint
    from keras_resnest.weights.pretrained import convert_to_keras, sha256_file

    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such checkpoint")
    if not is_torch_free_checkpoint(source):
        raise ValueError(f"{source}: expected a .pth/.pt, .safetensors or .npz checkpoint")
    model, report = convert_to_keras(model_name, source, output)
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
    if not torch_available():
        print("  check       skipped: torch and the official resnest package are not "
              "importable (pip install torch && pip install --no-deps resnest==0.0.5)",
              file=sys.stderr)
        return 0
    error, size = check_conversion(model_name, args.source, args.output)
    verdict = "OK" if error <= PARITY_TOLERANCE else "FAILED"
    print(f"  check       max|keras - torch| / max|torch| = {error:.2e} on a random "
          f"{size}x{size} image (bar {PARITY_TOLERANCE:.0e}): {verdict}")
    return 0 if verdict == "OK" else 1


# --------------------------------------------------------------------------------------------
# predict


def official_eval_crop(image, size):
    """The official evaluation transform of a PIL image: float32 RGB (size, size, 3), 0..255."""
    import numpy as np
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    crop = float(size) / (size + CROP_MARGIN) * min(width, height)
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    return np.asarray(image.resize((size, size), Image.BICUBIC), "float32")


def load_images(paths, size):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    batch = []
    for path in paths:
        try:
            with Image.open(path) as image:
                batch.append(official_eval_crop(image, size))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such image") from None
        except UnidentifiedImageError:
            raise ValueError(f"{path}: not an image PIL can read") from None
    return np.stack(batch)


def run_predict(args):
    from keras_resnest.imagenet import NUM_CLASSES, decode_predictions
    from keras_resnest.models import MODEL_CONFIGS, create_model

    model_name = _model_name(args.model)
    size = args.size or MODEL_CONFIGS[model_name].default_size
    if size < 32:
        raise ValueError(f"--size {size}: must be >= 32")
    if not 1 <= args.top <= NUM_CLASSES:
        raise ValueError(f"--top {args.top}: must be between 1 and {NUM_CLASSES}")
    images = load_images(args.images, size)
    weights = None if args.weights.lower() in ("none", "random") else args.weights
    model = create_model(model_name, weights=weights, input_shape=(size, size, 3))
    probabilities = model.predict(images, verbose=0)
    for path, top in zip(args.images, decode_predictions(probabilities, top=args.top)):
        print(path)
        for rank, (wordnet_id, name, score) in enumerate(top, start=1):
            print(f"  {rank}. {score:.4f}  {name} ({wordnet_id})")
    return 0
