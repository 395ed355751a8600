"""Top classes of image files: the official evaluation transform, the model, the class names.

The images are read by `keras_resnest.images` (the pixels of the serving graph's decoder) and
transformed by `keras_resnest.preprocessing.eval_transform`, the transform of the serving graph,
of training validation and of the keras-hub converter. `predict_files` streams: it reads and
predicts `batch_size` files at a time, so memory does not grow with the number of files.

Example:
    >>> import numpy as np, tempfile
    >>> from PIL import Image
    >>> path = tempfile.mkdtemp() + "/grey.png"
    >>> Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(path)
    >>> load_images([path], 32).shape
    (1, 32, 32, 3)
"""
from dataclasses import dataclass

import numpy as np

from keras_resnest import classifier
from keras_resnest.imagenet import NUM_CLASSES, decode_predictions
from keras_resnest.images import read_for_eval

DEFAULT_TOP = 5
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class FilePrediction:
    """One file's outcome: its `top` (name, probability) pairs, best first, or the `reason`
    it could not be used."""

    path: str
    best: list | None = None
    reason: str | None = None


def load_images(paths, size):
    """float32 `[N, size, size, 3]` (RGB 0..255): each image file, officially cropped.

    Args:
        paths (list[str | os.PathLike]): image files.
        size (int): side of the evaluation crop.

    Raises:
        ValueError: naming the first file that cannot be used, with its reason.
    """
    batch = []
    for path in paths:
        image, reason = read_for_eval(path, size)
        if reason is not None:
            raise ValueError(f"{path}: {reason}")
        batch.append(image)
    return np.stack(batch)


def predict_files(model, paths, size, top=DEFAULT_TOP, class_names=None,
                  batch_size=DEFAULT_BATCH_SIZE):
    """Yield a `FilePrediction` per file, in order, reading and predicting `batch_size` files
    at a time; a file that cannot be used gets its reason, and the others go on.

    Args:
        model (keras.Model): a classifier ending in the Dense "fc" layer (any last activation:
            the probabilities are the head's softmax).
        paths (list[str | os.PathLike]): image files.
        size (int): side of the evaluation crop.
        top (int): classes per image. Defaults to 5.
        class_names (list[str] | None): names of the classes; None for ImageNet names (1000
            classes) or indices. Defaults to None.
        batch_size (int): files read and predicted at a time. Defaults to 32.
    """
    head = classifier.classifier_head(model)
    for start in range(0, len(paths), batch_size):
        reads = [(path, *read_for_eval(path, size)) for path in paths[start:start + batch_size]]
        usable = [image for _, image, reason in reads if reason is None]
        best = iter(top_classes(np.asarray(head.predict_on_batch(np.stack(usable))[1]), top,
                                class_names) if usable else [])
        for path, _, reason in reads:
            if reason is None:
                yield FilePrediction(str(path), best=next(best))
            else:
                yield FilePrediction(str(path), reason=reason)


def predict_top_classes(model, paths, size, top=DEFAULT_TOP, class_names=None):
    """Per image file, its `top` (name, probability) pairs, best first.

    Args:
        model (keras.Model): as `predict_files`.
        paths (list[str | os.PathLike]): image files.
        size (int): side of the evaluation crop.
        top (int): classes per image. Defaults to 5.
        class_names (list[str] | None): as `predict_files`. Defaults to None.

    Raises:
        ValueError: naming the first file that cannot be used, with its reason.
    """
    results = []
    for prediction in predict_files(model, paths, size, top, class_names):
        if prediction.reason is not None:
            raise ValueError(f"{prediction.path}: {prediction.reason}")
        results.append(prediction.best)
    return results


def top_classes(probabilities, top, class_names=None):
    """Per image, the `top` (name, score) pairs, best first.

    Without `class_names`, a 1000-class model gets the ImageNet names ("tabby (n02123045)")
    and any other the class indices.
    """
    if class_names is None and probabilities.shape[-1] == NUM_CLASSES:
        return [[(f"{name} ({wordnet_id})", score) for wordnet_id, name, score in best]
                for best in decode_predictions(probabilities, top=top)]
    if class_names is None:
        class_names = [str(index) for index in range(probabilities.shape[-1])]
    return [[(class_names[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:top]]
            for row in probabilities]
