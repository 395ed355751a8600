"""Test-wide settings: TensorFlow logs kept quiet, the Hugging Face Hub replaced by a local
stand-in, and the longest files collected first."""
import os

from tests.helpers import hf_hub_standin

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# huggingface_hub reads HF_ENDPOINT (and its cache and offline settings) once, when it is
# imported, and keras-hub imports it: so the Hub tests' endpoint is set here, before any test
# module is imported. The alternative, a fresh process per Hub test with the environment set,
# would import TensorFlow again for each.
hf_hub_standin.configure_environment()

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


def pytest_configure(config):
    """One run id for the controller and its xdist workers: files the workers share carry it."""
    if not hasattr(config, "workerinput"):
        import uuid

        run_id = getattr(config.option, "testrunuid", None) or uuid.uuid4().hex
        config.option.testrunuid = run_id  # xdist hands it to the workers
        os.environ["PYTEST_XDIST_TESTRUNUID"] = run_id  # what the workers see, here too


def pytest_sessionfinish(session):
    """The controller removes what the workers shared (export_helpers.digits_model)."""
    import glob
    import tempfile

    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the others may still need the files
    pattern = os.path.join(
        tempfile.gettempdir(),
        f"keras_resnest_tests_*_{os.environ['PYTEST_XDIST_TESTRUNUID']}.keras*",
    )
    for path in glob.glob(pattern):
        os.remove(path)
