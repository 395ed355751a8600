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

Around a whole command (training decodes in tf.data's C++ threads, where a capture around one
decode is impossible), `filtered_stderr` forwards descriptor 2 line by line and drops only the
decoders' own lines, so tracebacks and real TensorFlow errors still reach the terminal.

The library itself never calls `import_tensorflow_quietly`: `import keras_resnest` in a user's
program leaves TensorFlow's logging as that program configured it.
"""
import os
import re
import sys
import tempfile
import threading

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


# Lines image decoders write to descriptor 2: libjpeg's messages (its jerror.h texts, written
# whole, one per line) and TensorFlow's C++ log lines from its JPEG/PNG/GIF readers.
DECODER_LINE = re.compile(
    rb"(Corrupt JPEG data|Premature end of JPEG|Improper call to JPEG library|Invalid JPEG file"
    rb"|Not a JPEG file|Bogus (marker|Huffman|DQT|DAC|input colorspace)|Unsupported marker"
    rb"|Huffman table 0x|Quantization table 0x|Warning: unknown JFIF|Warning: thumbnail image"
    rb"|JPEG datastream|libpng (warning|error))"
    rb"|[EWI]\d{4} [^\n]*\b(jpeg_mem|jpeg_handle|png_io|gif_io)\.cc:")


class filtered_stderr:
    """Context manager: descriptor 2 goes through a pipe whose reader thread forwards every line
    to the real stderr except image decoders' lines (`DECODER_LINE`) and lines `drop` matches,
    and each repeated line ending in one of `once` only the first time. Child processes started
    inside the block inherit the pipe, so their lines are filtered too.

    Args:
        once: iterable of str. Endings of lines shown only once. Defaults to ().
        drop: compiled bytes regex or None. Lines to hide (`match`, from the line's start).
            Defaults to None.

    Example:
        >>> with filtered_stderr():
        ...     _ = os.write(2, b"Corrupt JPEG data: bad Huffman code\\n")
    """

    def __init__(self, once=(), drop=None):
        self._once = tuple(text.encode() for text in once)
        self._drop = drop

    def __enter__(self):
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)  # fd 2 is then the only write end: restoring it ends the reader
        self._thread = threading.Thread(target=self._forward, args=(read_end,), daemon=True)
        self._thread.start()
        return self

    def _forward(self, read_end):
        seen = set()
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if DECODER_LINE.match(line) or (self._drop and self._drop.match(line)):
                    continue
                if line.rstrip(b"\n").endswith(self._once):
                    if line in seen:
                        continue
                    seen.add(line)
                os.write(self._saved, line)

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        # A child process still holding the pipe would keep the reader waiting: never hang.
        self._thread.join(timeout=5)
        os.close(self._saved)
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

    Must run before anything else imports TensorFlow; later calls are harmless no-ops. Then
    completes `import keras_resnest` (its public names, and Keras' registry of its classes),
    which a program started through `keras_resnest_cli` defers until this point.
    """
    if not (verbose or "tensorflow" in sys.modules):
        _import_quietly()
    import keras_resnest

    keras_resnest.import_api()


def _import_quietly():
    os.environ[LOG_LEVEL_VARIABLE] = quiet_log_level(os.environ.get(LOG_LEVEL_VARIABLE))
    capture = captured_stderr()
    try:
        with capture:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs (cuInit) happen here
    except BaseException:
        sys.stderr.write(capture.text)  # the import failed: what it printed is the user's clue
        raise


# What the TFLite converter and the LiteRT interpreter write to descriptor 2 from C++ on every
# conversion or interpreter start, whatever TF_CPP_MIN_LOG_LEVEL says: for `filtered_stderr`.
TFLITE_CHATTER = re.compile(
    rb"(fully_quantize: \d|INFO: Created TensorFlow Lite \w+ delegate"
    rb"|INFO: Initialized TensorFlow Lite runtime)")
