"""Folders for module-scoped fixtures that are removed when the module's tests are done.

pytest keeps every `tmp_path_factory.mktemp` folder until the session ends. A whole run writes
several GB that way (a user's virtual environment with TensorFlow, SavedModels, training runs),
and CI's disk is not ours to size: a run once ended in `No space left on device`. Function-scoped
`tmp_path` folders go when their test passes (`tmp_path_retention_policy` in pyproject.toml).
"""
import contextlib
import shutil


@contextlib.contextmanager
def module_folder(tmp_path_factory, name):
    """A new folder from `tmp_path_factory`, removed when the `with` block ends.

    Use it around the `yield` of a module-scoped fixture:

        @pytest.fixture(scope="module")
        def trained(tmp_path_factory):
            with scratch.module_folder(tmp_path_factory, "trained") as root:
                ...
                yield root

    Args:
        tmp_path_factory: pytest.TempPathFactory. pytest's session fixture.
        name: str. The folder's name stem.
    """
    path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
