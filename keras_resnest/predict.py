"""Top classes of image files: the official evaluation transform, the model, the class names.

The images are decoded with PIL (any format it reads) and transformed by
`keras_resnest.preprocessing.eval_transform`, the transform of the serving graph, of training
validation and of the keras-hub converter.

Example:
    >>> import numpy as np, tempfile
    >>> from PIL import Image
    >>> path = tempfile.mkdtemp() + "/grey.png"
    >>> Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(path)
    >>> load_images([path], 32).shape
    (1, 32, 32, 3)
"""
import numpy as np

from keras_resnest import classifier
from keras_resnest.imagenet import NUM_CLASSES, decode_predictions
from keras_resnest.preprocessing import eval_transform

DEFAULT_TOP = 5


def load_images(paths, size):
    """float32 `[N, size, size, 3]` (RGB 0..255): each image file, officially cropped.

    Args:
        paths: list of path-like. Image files PIL can read.
        size: int. Side of the evaluation crop.
    """
    from PIL import Image, UnidentifiedImageError

    batch = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such image") from None
        except UnidentifiedImageError:
            raise ValueError(f"{path}: not an image PIL can read") from None
        except OSError as error:  # an image PIL knows, damaged inside (e.g. truncated)
            raise ValueError(f"{path}: cannot decode the image ({error})") from None
        batch.append(eval_transform(pixels, size).numpy())
    return np.stack(batch)


def predict_top_classes(model, paths, size, top=DEFAULT_TOP, class_names=None):
    """Per image file, its `top` (name, probability) pairs, best first.

    Args:
        model: keras.Model. A classifier ending in the Dense "fc" layer (any last activation:
            the probabilities are the head's softmax).
        paths: list of path-like. Image files.
        size: int. Side of the evaluation crop.
        top: int. Classes per image. Defaults to 5.
        class_names: list of str, or None for ImageNet names (1000 classes) or indices.
    """
    _, probabilities = classifier.classifier_head(model).predict(load_images(paths, size),
                                                                 verbose=0)
    return top_classes(probabilities, top, class_names)


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
