"""Files that are complete or absent: write under a temporary name, rename on success.

Shared by weight downloads and conversions (`keras_resnest.weights`), exports
(`keras_resnest.export`) and training outputs (`keras_resnest.training`).

The temporary file becomes the final one by a rename, so its permissions are the final file's:
it is created as `open(path, "w")` would create it (0666 minus the umask), not with the 0600
of `tempfile.mkstemp`, which would leave every output readable by its owner only.
"""
import contextlib
import json
import os
import secrets

# Attempts at a free temporary name; a collision of 32 random bits is already unlikely.
_NAME_ATTEMPTS = 100


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


def create_temporary_sibling(final):
    """Creates an empty, uniquely named file beside `final` and returns its path.

    Like `tempfile.mkstemp` (exclusive creation, so no other process shares the name), but
    with the mode a new `open(final, "w")` would get. The name keeps `final`'s extensions
    (`model.keras` -> `.model.partial-1a2b3c4d.keras`) for writers that check them, such as
    `keras.Model.save`.
    """
    directory, name = os.path.split(os.path.abspath(final))
    stem, dot, extensions = name.partition(".")
    for _ in range(_NAME_ATTEMPTS):
        candidate = os.path.join(
            directory, f".{stem}.partial-{secrets.token_hex(4)}{dot}{extensions}"
        )
        try:
            # 0o666 is what open() passes: the umask then applies as for any new file.
            descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        return candidate
    raise FileExistsError(f"no free temporary name for {final} in {directory}")


@contextlib.contextmanager
def written_atomically(final):
    """Yields a new temporary path beside `final`, renamed to `final` when the block succeeds.

    The block writes the temporary file (it exists, empty); on failure it is deleted and
    `final` is left as it was.

    Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with written_atomically(os.path.join(folder, "notes.txt")) as temporary:
    ...     _ = open(temporary, "w").write("done")
    >>> os.listdir(folder), open(os.path.join(folder, "notes.txt")).read()
    (['notes.txt'], 'done')
    """
    with renamed_on_success(create_temporary_sibling(final), final) as temporary:
        yield temporary


def write_atomically(final, write):
    """Writes `final` through `write(temporary_path)`, creating its folder first: the file is
    complete or left as it was (`written_atomically`).

    Args:
        final (str): The file to write.
        write (callable): Writes the file at the path it is given, e.g. `model.save`; the
            path keeps `final`'s extensions (".keras", ".weights.h5").
    """
    os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
    with written_atomically(final) as temporary:
        write(temporary)


def write_json(final, value):
    """Writes `value` as indented JSON to `final`, atomically (`write_atomically`).

    Args:
        final (str): The file to write.
        value (object): Anything `json.dump` takes.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run", "progress.json")
    >>> write_json(path, {"epoch": 1})
    >>> json.load(open(path))
    {'epoch': 1}
    """
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=1)

    write_atomically(final, write)
