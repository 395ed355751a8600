"""Test-wide settings: TensorFlow logs kept quiet, and the longest files collected first."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The longest test files first. `make test` runs two pytest-xdist workers that take whole files
# in collection order (`--dist loadfile`); a long file collected late would run alone at the end
# (measured: the MirroredStrategy file started 20 minutes in and ran 13 minutes on its own).
LONGEST_FILES_FIRST = ("test_training_distributed.py", "test_hub.py", "test_export_cli.py",
                       "test_backends.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(
            LONGEST_FILES_FIRST)

    items.sort(key=rank)  # a stable sort: every file keeps its own order
