"""Class names of a classifier: a labels file (one name a line) or the `class_names.json` that
`keras-resnest train` writes beside its `model.keras`.

Both may be local or on a Beam filesystem (`gs://`, `s3://`: `keras_resnest.filesystems`), as
`predict-batch` takes its model and labels from a bucket."""
import json
from pathlib import Path

from keras_resnest import filesystems

# Written beside model.keras by `keras-resnest train`: the names of the head's classes, in order.
CLASS_NAMES_FILE = "class_names.json"


def read_labels(path):
    """The class names in a text file, one per line (trailing blank lines dropped).

    Args:
        path: path-like. The labels file, local or on a Beam filesystem.

    Returns:
        list of str.
    """
    labels = _read_text(path, "--labels").splitlines()
    while labels and not labels[-1].strip():
        labels.pop()
    return labels


def class_names_beside(model_file):
    """(names, path) from the `class_names.json` beside `model_file`; (None, None) if absent.

    Args:
        model_file: path-like. A saved `.keras` model, local or on a Beam filesystem.
    """
    if filesystems.is_remote(model_file):
        path = filesystems.beside(model_file, CLASS_NAMES_FILE)
        if not filesystems.exists(path):
            return None, None
    else:
        path = Path(model_file).parent / CLASS_NAMES_FILE
        if not path.is_file():
            return None, None
    try:
        names = json.loads(_read_text(path, "class names"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON list of class names ({error})") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: expected a JSON list of class names (strings)")
    return names, str(path)


def _read_text(path, flag):
    if filesystems.is_remote(path):
        # Not Path(path): it would make "gs://b/x" "gs:/b/x".
        if not filesystems.exists(path):
            raise FileNotFoundError(f"{flag} {path}: no such file")
        return filesystems.read_bytes(path).decode("utf-8")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    return path.read_text(encoding="utf-8")
