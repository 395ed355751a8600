"""`--deterministic` with the default seed 0, and `train` leaving op determinism as it found it.

In-process runs through `keras_resnest.commands.main.main` (the default strategy, one device); the
mirrored two-replica repeat with other seeds is in test_training_distributed.py.
"""
import os

import h5py
import numpy as np
import pytest
from tensorflow.python.framework.config import (
    disable_op_determinism,
    enable_op_determinism,
    is_op_determinism_enabled,
)

from keras_resnest.commands.main import main

pytestmark = pytest.mark.slow  # the whole file: see `make test-fast`

# Every seeded op of the pipeline: crop, flip, RandAugment, MixUp, CutMix and the switch between
# them.
ARGS = [
    "train",
    "--model",
    "resnest14d",
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--steps-per-epoch",
    "2",
    "--warmup-epochs",
    "0",
    "--randaugment",
    "--mixup",
    "0.2",
    "--cutmix",
    "1.0",
    "--deterministic",
]


def _weights(run_dir):
    arrays = {}
    with h5py.File(os.path.join(run_dir, "model.weights.h5"), "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return arrays


@pytest.fixture
def determinism_off():
    disable_op_determinism()
    yield
    disable_op_determinism()


def test_deterministic_run_with_the_default_seed_repeats_exactly_and_restores_op_determinism(
    tmp_path, capsys, determinism_off
):
    runs = []
    for name, already_on in (("a", False), ("b", True)):
        if already_on:
            enable_op_determinism()
        code = main([*ARGS, "-o", str(tmp_path / name)])  # no --seed: the default, 0
        assert code == 0, capsys.readouterr().err[-2000:]
        # As found: off stays off (the first run), on stays on (the second).
        assert is_op_determinism_enabled() == already_on
        runs.append(_weights(str(tmp_path / name)))
    first, again = runs
    assert first.keys() == again.keys() and len(first) > 100
    assert [name for name in first if not np.array_equal(first[name], again[name])] == []
