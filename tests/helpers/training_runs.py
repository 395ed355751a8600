"""What the tests that run `python -m keras_resnest.training` in subprocesses share.

Run as a script, this file is a driver that trains like `python -m keras_resnest.training`
with a `KillAfterCheckpoint` callback: `python tests/helpers/training_runs.py N TRAIN_ARGS...`.
"""
import json
import os
import signal
import sys

import keras

TRAIN = [sys.executable, "-m", "keras_resnest.training", "--model", "resnest14d",
         "--dataset", "digits"]


def train_killed_after(checkpoint):
    """TRAIN, through this file's driver: the run SIGKILLs itself after backup `checkpoint`."""
    return [sys.executable, os.path.abspath(__file__), str(checkpoint), *TRAIN[3:]]


class KillAfterCheckpoint(keras.callbacks.Callback):
    """SIGKILLs this process right after backup checkpoint `number` (epoch x steps + step) was
    written, as a crash would (no cleanup, no final save), at the same step on any machine.

    Args:
        number: int. The checkpoint number after which the process dies.
    """

    def __init__(self, number):
        super().__init__()
        self.number = number

    def on_backup_saved(self, number, epoch, step):
        if number == self.number:
            os.kill(os.getpid(), signal.SIGKILL)


def train_env(**extra):
    """The environment of a training subprocess: quiet, unbuffered, no inherited TF_CONFIG."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _main(argv):
    from keras_resnest.commands import main as cli
    from keras_resnest.commands import train as train_cli
    from keras_resnest.quiet_start import import_tensorflow_quietly

    checkpoint, *train_args = argv
    args = cli.build_parser().parse_args(["train", *train_args])
    import_tensorflow_quietly(verbose=args.verbose)
    try:
        return train_cli.run(args, callbacks=[KillAfterCheckpoint(int(checkpoint))])
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"keras-resnest train: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
