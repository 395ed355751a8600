"""TensorFlow imported without its C++ start-up chatter, for the commands and the demo.

`import tensorflow` and the first device query print lines a user cannot act on ("All log
messages before absl::InitializeLog()", "Could not find cuda drivers", "cpu_feature_guard",
"failed call to cuInit" on a machine without a GPU). Most of them are written by C++ code before
TensorFlow's own log level applies, so `TF_CPP_MIN_LOG_LEVEL` alone cannot hide them: the
import and the device query run with the process's stderr (file descriptor 2) captured, and the
capture is printed only if the import fails. Afterwards `TF_CPP_MIN_LOG_LEVEL=2` keeps C++
info and warning lines (e.g. tf.data's optimisation warnings) out; errors still show.

A user who sets `TF_CPP_MIN_LOG_LEVEL` themselves, or passes `--verbose`, sees everything.

The library itself never calls this: `import keras_resnest` in a user's program leaves
TensorFlow's logging as that program configured it.
"""
import os
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def import_tensorflow_quietly(verbose=False):
    """Imports TensorFlow (and initialises its devices), hiding the start-up lines.

    Must run before anything else imports TensorFlow; later calls are harmless no-ops.
    """
    if verbose or LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return
    os.environ[LOG_LEVEL_VARIABLE] = "2"
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs (cuInit) happen here
        except BaseException:
            _restore_stderr(saved_stderr)
            capture.seek(0)  # the import failed: what it printed is the user's clue
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
            raise
        _restore_stderr(saved_stderr)


def _restore_stderr(saved_stderr):
    os.dup2(saved_stderr, 2)
    os.close(saved_stderr)
