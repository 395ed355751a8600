"""Test-wide settings: TensorFlow logs kept quiet, and the longest files collected first."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The longest test files first. `make test` runs two pytest-xdist workers that take whole files
# in collection order (`--dist loadfile --no-loadscope-reorder`; by default xdist hands out the
# files with the most tests first). A long file handed out late runs alone at the end: the
# MirroredStrategy file (7 tests, 16 minutes) started 17-20 minutes in. Each worker starts with
# two files: the first and third, the second and fourth.
LONGEST_FILES_FIRST = ("test_training_distributed.py", "test_hub.py", "test_backends.py",
                       "test_export_cli.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(
            LONGEST_FILES_FIRST)

    items.sort(key=rank)  # a stable sort: every file keeps its own order
