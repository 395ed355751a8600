"""Writing outputs so that nothing is ever left half-written.

Every exporter writes into a temporary sibling of its destination and renames it into place
only once it is complete; an interrupted or failed export leaves the destination untouched.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model"
    >>> with replace_directory(target) as staging:
    ...     _ = (staging / "file.txt").write_text("done")
    >>> sorted(p.name for p in target.iterdir())
    ['file.txt']
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from keras_resnest.atomic_files import written_atomically


def refuse_existing(path, overwrite):
    """Raise FileExistsError if `path` is a non-empty directory or a file and not `overwrite`."""
    path = Path(path)
    if overwrite or not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise FileExistsError(
        f"{path} already exists and is not empty; choose another output or pass --overwrite "
        "(overwrite=True)"
    )


@contextlib.contextmanager
def replace_directory(path, *, overwrite=False):
    """Yield a fresh, empty staging directory that replaces `path` when the block succeeds."""
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    # `scratch` is private (mkdtemp: 0700) and never renamed; `staging`, the directory that
    # becomes `path`, is made by a plain mkdir and so gets the umask's mode, as os.makedirs.
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    staging = scratch / path.name
    staging.mkdir()
    try:
        yield staging
        if not any(staging.iterdir()):
            raise RuntimeError(f"the exporter wrote nothing for {path}")
        if path.exists():
            # Move the old one aside first, so there is never a moment without a complete one
            # beyond the two renames.
            retired = scratch / f"{path.name}.old"
            os.replace(path, retired)
        os.replace(staging, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_file_atomically(path, data, *, overwrite=True):
    """Write bytes or text to `path` through a temporary file in the same directory."""
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as temporary:
        if isinstance(data, bytes):
            Path(temporary).write_bytes(data)
        else:
            Path(temporary).write_text(data, encoding="utf-8")
    return path
