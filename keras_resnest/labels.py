"""Class names of a classifier: a labels file (one name a line) or the `class_names.json` that
`keras-resnest train` writes beside its `model.keras`."""
import json
from pathlib import Path

# Written beside model.keras by `keras-resnest train`: the names of the head's classes, in order.
CLASS_NAMES_FILE = "class_names.json"


def read_labels(path):
    """The class names in a text file, one per line (trailing blank lines dropped).

    Args:
        path: path-like. The labels file.

    Returns:
        list of str.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--labels {path}: no such file")
    labels = path.read_text(encoding="utf-8").splitlines()
    while labels and not labels[-1].strip():
        labels.pop()
    return labels


def class_names_beside(model_file):
    """(names, path) from the `class_names.json` beside `model_file`; (None, None) if absent.

    Args:
        model_file: path-like. A saved `.keras` model.
    """
    path = Path(model_file).parent / CLASS_NAMES_FILE
    if not path.is_file():
        return None, None
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON list of class names ({error})") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: expected a JSON list of class names (strings)")
    return names, str(path)
