"""`keras-resnest convert` and `keras-resnest predict`.

    keras-resnest convert resnest50-528c19ca.pth --model resnest50 -o resnest50.weights.h5
    keras-resnest convert model.safetensors --model resnest50d -o r50.weights.h5 --check
    keras-resnest predict cat.jpg dog.png --model resnest50 --top 5
    keras-resnest predict photo.jpg --weights runs/photos/model.keras   # a model you trained

TensorFlow is imported by the handlers, not at registration, so `--help` stays fast.
"""
import json
import os
from pathlib import Path

# Official evaluation transform (scripts/torch/verify.py, ECenterCrop): crop
# size / (size + CROP_MARGIN) of the short side, then a bicubic resize to size x size.
CROP_MARGIN = 32
CHECK_SEED = 0
DEFAULT_TOP = 5
# Written beside model.keras by `keras-resnest train`: the names of the head's classes, in order.
CLASS_NAMES_FILE = "class_names.json"


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

    predict = subparsers.add_parser(
        "predict", help="top classes of images (ImageNet, or a model you trained)",
        description="Classify images with the official evaluation transform (centre crop "
        "of size/(size+32) of the short side, bicubic resize). With --weights MODEL.keras (e.g. "
        "`keras-resnest train`'s model.keras) the file is the model: its architecture, input "
        "size and head are used and the class names are read from class_names.json beside it "
        "(or --labels).")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--model", default="resnest50", metavar="NAME",
                         help="model name (default resnest50); ignored with a .keras model")
    predict.add_argument("--weights", default="imagenet",
                         help="'imagenet' (default), a checkpoint, a Keras weights file, or a "
                         "fine-tuned .keras model")
    predict.add_argument("--labels", type=Path, default=None, metavar="FILE",
                         help="class names, one per line (default: class_names.json beside a "
                         ".keras model; ImageNet names for 1000 classes; else 0..N-1)")
    predict.add_argument("--top", type=int, default=None,
                         help=f"classes per image (default {DEFAULT_TOP}, or all if fewer)")
    predict.add_argument("--size", type=int, default=None,
                         help="evaluation crop (default: the model's, e.g. 224 for resnest50)")
    predict.set_defaults(func=run_predict)


def _model_name(name):
    """The canonical name of `--model` (aliases such as resnest50d included), or ValueError."""
    from keras_resnest.models import resolve_model_name

    return resolve_model_name(name)


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


# --------------------------------------------------------------------------------------------
# predict


def official_eval_crop(image, size):
    """The official evaluation transform of a PIL image: float32 RGB (size, size, 3), 0..255.

    Kept line for line as the official `verify.py` writes it: the tests use it as the reference
    for the TensorFlow transform (`keras_resnest.export.image_transform`)."""
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
        except OSError as error:  # an image PIL knows, damaged inside (e.g. truncated)
            raise ValueError(f"{path}: cannot decode the image ({error})") from None
    return np.stack(batch)


def run_predict(args):
    # Everything that can be checked without the model is checked before it is built.
    model_name = _model_name(args.model)
    if args.size is not None and args.size < 32:
        raise ValueError(f"--size {args.size}: must be >= 32")
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top {args.top}: must be >= 1")
    missing = [path for path in args.images if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"no such image: {', '.join(missing)}")
    class_names, names_source = read_class_names(args)

    from keras_resnest.export import classifier

    model, size = load_predict_model(model_name, args)
    num_classes = classifier.num_classes(model)  # a model without a classifier head: one line
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{names_source} has {len(class_names)} class names but the model has "
                         f"{num_classes} classes")
    if args.top is not None and args.top > num_classes:
        raise ValueError(f"--top {args.top}: the model has only {num_classes} classes")
    top = args.top or min(DEFAULT_TOP, num_classes)

    images = load_images(args.images, size)
    # The head's probabilities whatever the model's last activation (a softmax, or logits).
    _, probabilities = classifier.classifier_head(model).predict(images, verbose=0)
    for path, best in zip(args.images, top_classes(probabilities, top, class_names)):
        print(path)
        for rank, (name, score) in enumerate(best, start=1):
            print(f"  {rank}. {score:.4f}  {name}")
    return 0


def load_predict_model(model_name, args):
    """(model, image size): a fine-tuned `.keras` model as saved, else `model_name` built."""
    from keras_resnest.export.model_source import is_keras_model_file, load_model_for_export

    if is_keras_model_file(args.weights):
        from keras_resnest.export.classifier import fixed_image_size

        # The file holds the architecture, input size and head (export's loader: the same
        # models are accepted); --size must agree with a fixed input size or sets a free one.
        model = load_model_for_export(model_name, args.weights, args.size)
        return model, fixed_image_size(model) or args.size or _default_size(model_name)

    from keras_resnest.models import create_model

    size = args.size or _default_size(model_name)
    weights = None if args.weights.lower() in ("none", "random") else args.weights
    return create_model(model_name, weights=weights, input_shape=(size, size, 3)), size


def _default_size(model_name):
    from keras_resnest.models import MODEL_CONFIGS

    return MODEL_CONFIGS[model_name].default_size


def read_class_names(args):
    """(names, where they came from) from --labels or a .keras model's class_names.json.

    (None, None) when there are neither: ImageNet names for 1000 classes, else indices.
    """
    from keras_resnest.export.cli import read_labels
    from keras_resnest.export.model_source import is_keras_model_file

    if args.labels is not None:
        return read_labels(args.labels), f"--labels {args.labels}"
    if not is_keras_model_file(args.weights):
        return None, None
    path = Path(args.weights).parent / CLASS_NAMES_FILE
    if not path.is_file():
        return None, None
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON list of class names ({error})") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: expected a JSON list of class names (strings)")
    return names, str(path)


def top_classes(probabilities, top, class_names=None):
    """Per image, the `top` (name, score) pairs, best first.

    Without `class_names`, a 1000-class model gets the ImageNet names ("tabby (n02123045)")
    and any other the class indices.
    """
    import numpy as np

    from keras_resnest.imagenet import NUM_CLASSES, decode_predictions

    if class_names is None and probabilities.shape[-1] == NUM_CLASSES:
        return [[(f"{name} ({wordnet_id})", score) for wordnet_id, name, score in best]
                for best in decode_predictions(probabilities, top=top)]
    if class_names is None:
        class_names = [str(index) for index in range(probabilities.shape[-1])]
    return [[(class_names[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:top]]
            for row in probabilities]
