"""What the tests that run `python -m keras_resnest.training` in subprocesses share."""
import json
import os
import sys

TRAIN = [sys.executable, "-m", "keras_resnest.training", "--model", "resnest14d", "--dataset", "digits"]


def train_env(**extra):
    """The environment of a training subprocess: quiet, unbuffered, no inherited TF_CONFIG."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
