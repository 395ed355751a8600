"""The errors of checkpoint reading: the two public ones, and the two raised inside the
unpickler (where the file's name is not at hand) that become them.
"""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: wrong format, truncated, or not a state dict."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that asks for a global outside the state-dict allow-list, or tries to change
    one of the allow-list's objects."""


class Malformed(Exception):
    """Raised while unpickling, where the file's name is not at hand; becomes CheckpointError."""


class Refused(Exception):
    """Like Malformed, for a pickle that acts against the reader; becomes UnsafeCheckpointError."""
