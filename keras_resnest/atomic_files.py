"""Files that are complete or absent: write under a temporary name, rename on success.

Shared by weight downloads and conversions (`keras_resnest.weights`) and exports
(`keras_resnest.export`).
"""
import contextlib
import os


@contextlib.contextmanager
def renamed_on_success(temporary, final):
    """Yields `temporary`; renames it to `final` if the block succeeds, deletes it otherwise.

    Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with renamed_on_success(os.path.join(folder, "a.part"), os.path.join(folder, "a")) as t:
    ...     _ = open(t, "w").write("done")
    >>> os.listdir(folder)
    ['a']
    """
    try:
        yield temporary
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
