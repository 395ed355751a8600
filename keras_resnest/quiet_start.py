"""TensorFlow imported without its C++ start-up chatter, for the commands and the demo, and
image decoders run without theirs.

`import tensorflow` and the first device query print lines a user cannot act on ("All log
messages before absl::InitializeLog()", "Could not find cuda drivers", "cpu_feature_guard",
"failed call to cuInit" on a machine without a GPU). Most of them are written by C++ code before
TensorFlow's own log level applies, so `TF_CPP_MIN_LOG_LEVEL` alone cannot hide them: the
import and the device query run with the process's stderr (file descriptor 2) captured, and the
capture is printed only if the import fails. Afterwards `TF_CPP_MIN_LOG_LEVEL` is at least 2,
which keeps C++ info and warning lines (e.g. tf.data's optimisation warnings) out; errors still
show. A user's own higher value (3) is kept; a lower one would bring those lines back.

Only `--verbose` shows everything (and leaves `TF_CPP_MIN_LOG_LEVEL` as the user set it).

Image decoders (libjpeg inside TensorFlow's decode ops) also write to descriptor 2 directly
("Improper call to JPEG library", "Corrupt JPEG data: ..."); `captured_stderr` keeps such lines
from the terminal around one decode, so the caller can report the file by name instead.

The library itself never calls `import_tensorflow_quietly`: `import keras_resnest` in a user's
program leaves TensorFlow's logging as that program configured it.
"""
import os
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = 2  # C++ errors only


class captured_stderr:
    """Context manager: file descriptor 2 goes to a temporary file while the block runs.

    C++ code (TensorFlow's start-up, libjpeg) writes to the descriptor itself, past
    `sys.stderr`, so redirecting `sys.stderr` would not hide it. After the block, `text` holds
    what was written there; none of it reaches the terminal. The descriptor is the process's:
    other threads' output during the block is captured too.

    Example:
        >>> with captured_stderr() as capture:
        ...     _ = os.write(2, b"Corrupt JPEG data\\n")
        >>> capture.text
        'Corrupt JPEG data\\n'
    """

    def __enter__(self):
        self.text = ""
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False


def quiet_log_level(user_value):
    """The `TF_CPP_MIN_LOG_LEVEL` for a quiet run: the user's value, but at least
    QUIET_LOG_LEVEL (an unset, empty or non-numeric value counts as 0)."""
    try:
        level = int(user_value)
    except (TypeError, ValueError):
        level = 0
    return str(max(level, QUIET_LOG_LEVEL))


def import_tensorflow_quietly(verbose=False):
    """Imports TensorFlow (and initialises its devices), hiding the start-up lines.

    Must run before anything else imports TensorFlow; later calls are harmless no-ops.
    """
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ[LOG_LEVEL_VARIABLE] = quiet_log_level(os.environ.get(LOG_LEVEL_VARIABLE))
    capture = captured_stderr()
    try:
        with capture:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs (cuInit) happen here
    except BaseException:
        sys.stderr.write(capture.text)  # the import failed: what it printed is the user's clue
        raise
