"""`keras-resnest predict`: the top classes of images.

    keras-resnest predict cat.jpg dog.png --model resnest50 --top 5
    keras-resnest predict photo.jpg --weights runs/photos/model.keras   # a model you trained

Files are read and predicted --batch-size at a time, each printed as soon as it is predicted. A
file that cannot be used is named on stderr with its reason and the others go on; the command
then exits 1. TensorFlow is imported by the handler, not at registration, so `--help` stays fast.
"""
import os
import sys
from pathlib import Path

# keras_resnest.predict.DEFAULT_TOP and DEFAULT_BATCH_SIZE; not imported here: that module
# imports TensorFlow.
DEFAULT_TOP = 5
DEFAULT_BATCH_SIZE = 32


def register(subparsers):
    predict = subparsers.add_parser(
        "predict", help="top classes of images (ImageNet, or a model you trained)",
        description="Classify images with the official evaluation transform (centre crop "
        "of size/(size+32) of the short side, bicubic resize). With --weights MODEL.keras (e.g. "
        "`keras-resnest train`'s model.keras) the file is the model: its architecture, input "
        "size and head are used and the class names are read from class_names.json beside it "
        "(or --labels). A file that cannot be used (not a JPEG, PNG, GIF, BMP or WebP image, "
        "damaged, or over 50,000,000 pixels) is named with its reason and the others are "
        "predicted; the exit status is then 1.")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_arguments(predict)
    predict.add_argument("--top", type=int, default=None,
                         help=f"classes per image (default {DEFAULT_TOP}, or all if fewer)")
    predict.add_argument("--size", type=int, default=None,
                         help="evaluation crop (default: the model's, e.g. 224 for resnest50)")
    predict.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                         help=f"images read and predicted at a time (default {DEFAULT_BATCH_SIZE})")
    predict.set_defaults(func=run_predict)


def add_model_arguments(parser, weights_note="", path_type=Path):
    """--model, --weights and --labels: the model and its class names, as `predict` and
    `predict-batch` take them.

    Args:
        parser: argparse.ArgumentParser. The command's parser.
        weights_note: str. Added to the help of --weights. Defaults to "".
        path_type: callable. The type of --labels: str where it may name a bucket (`Path`
            would make "gs://b/x" "gs:/b/x"). Defaults to Path.
    """
    parser.add_argument("--model", default="resnest50", metavar="NAME",
                        help="model name (default resnest50); ignored with a .keras model")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (default), a checkpoint, a Keras weights file, "
                        f"hf://<owner>/<name>, or a fine-tuned .keras model{weights_note}")
    parser.add_argument("--labels", type=path_type, default=None, metavar="FILE",
                        help="class names, one per line (default: class_names.json beside a "
                        ".keras model; ImageNet names for 1000 classes; else 0..N-1)")


def run_predict(args):
    from keras_resnest import classifier
    from keras_resnest.models import resolve_model_name
    from keras_resnest.predict import predict_files

    # Everything that can be checked without the model is checked before it is built.
    model_name = resolve_model_name(args.model)
    if args.size is not None and args.size < 32:
        raise ValueError(f"--size {args.size}: must be >= 32")
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top {args.top}: must be >= 1")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be >= 1")
    if not any(os.path.isfile(path) for path in args.images):
        raise FileNotFoundError(f"no such image: {', '.join(args.images)}")
    class_names, names_source = read_class_names(args)

    model, size = load_predict_model(model_name, args)
    num_classes = classifier.num_classes(model)  # a model without a classifier head: one line
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{names_source} has {len(class_names)} class names but the model has "
                         f"{num_classes} classes")
    if args.top is not None and args.top > num_classes:
        raise ValueError(f"--top {args.top}: the model has only {num_classes} classes")
    top = args.top or min(DEFAULT_TOP, num_classes)

    unusable = 0
    for prediction in predict_files(model, args.images, size, top, class_names,
                                    batch_size=args.batch_size):
        if prediction.reason is not None:
            unusable += 1
            print(f"keras-resnest predict: error: {prediction.path}: {prediction.reason}",
                  file=sys.stderr, flush=True)
            continue
        lines = [prediction.path] + [f"  {rank}. {score:.4f}  {name}"
                                     for rank, (name, score) in enumerate(prediction.best, 1)]
        print("\n".join(lines), flush=True)
    if unusable and len(args.images) > 1:
        print(f"keras-resnest predict: {unusable} of {len(args.images)} files could not be used "
              "(named above)", file=sys.stderr)
    return 1 if unusable else 0


def load_predict_model(model_name, args):
    """(model, image size): a fine-tuned `.keras` model as saved, else `model_name` built."""
    from keras_resnest.model_source import is_keras_model_file, load_model_for_export
    from keras_resnest.models import MODEL_CONFIGS, create_model

    default_size = MODEL_CONFIGS[model_name].default_size
    if is_keras_model_file(args.weights):
        from keras_resnest.classifier import fixed_image_size

        # The file holds the architecture, input size and head (export's loader: the same
        # models are accepted); --size must agree with a fixed input size or sets a free one.
        model = load_model_for_export(model_name, args.weights, args.size)
        return model, fixed_image_size(model) or args.size or default_size

    size = args.size or default_size
    weights = None if args.weights.lower() in ("none", "random") else args.weights
    return create_model(model_name, weights=weights, input_shape=(size, size, 3)), size


def read_class_names(args):
    """(names, where they came from) from --labels or a .keras model's class_names.json.

    (None, None) when there are neither: ImageNet names for 1000 classes, else indices.
    """
    from keras_resnest.labels import class_names_beside, read_labels
    from keras_resnest.model_source import is_keras_model_file

    if args.labels is not None:
        return read_labels(args.labels), f"--labels {args.labels}"
    if not is_keras_model_file(args.weights):
        return None, None
    return class_names_beside(args.weights)
