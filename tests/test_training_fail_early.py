"""`keras-resnest train` fails before work, never after: what is knowable at the start is checked
before the model is built, and reported in one line naming the problem and the fix.

The failing runs go through `keras_resnest.commands.main.main` in this process, with the model
builder replaced by one that fails the test: a check that came after the build would show as that
failure instead of the one-line error. The run directory must hold no backup/ (no step ran).
"""
import io
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_resnest.commands.main import main
from keras_resnest.training import finetune

ERROR = "keras-resnest train: error: "


@pytest.fixture
def no_model(monkeypatch):
    def build_classifier(*args, **kwargs):
        raise AssertionError("the model was built before the error")

    monkeypatch.setattr(finetune, "build_classifier", build_classifier)


def _fails_early(capsys, args, run_dir, expected):
    """Runs `train ARGS -o run_dir`; asserts exit 2, one error line holding `expected`, no step."""
    code = main(["train", "--model", "resnest14d", *args, "-o", str(run_dir)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(ERROR), err
    assert expected in lines[0], lines[0]
    assert not os.path.exists(os.path.join(str(run_dir), "backup"))
    return lines[0]


def _png(path, value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())


def _folder(root, per_class, classes=("cat", "dog"), val_per_class=None):
    for split, count in (("train", per_class), ("val", val_per_class)):
        if count is None:
            continue
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                _png(folder / f"{i}.png", 40 * index + i)
    return str(root)


def _tfrecord(path, count):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            encoded = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(encoded, format="PNG")
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[encoded.getvalue()])
                ),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    return str(path)


def test_output_that_is_an_existing_file(tmp_path, capsys, no_model):
    target = tmp_path / "run"
    target.write_text("not a directory")
    _fails_early(capsys, ["--dataset", "digits"], target, "is an existing file: give a directory")
    assert target.read_text() == "not a directory"


def test_output_that_cannot_be_created(tmp_path, capsys, no_model):
    (tmp_path / "file").write_text("x")
    _fails_early(
        capsys,
        ["--dataset", "digits"],
        tmp_path / "file" / "run",
        "is not writable (Not a directory)",
    )


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root writes through permission bits"
)
def test_output_without_write_permission(tmp_path, capsys, no_model):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        _fails_early(
            capsys, ["--dataset", "digits"], locked / "run", "is not writable (Permission denied)"
        )
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("seed", ["-1", str(2**31)])
def test_unusable_seed(tmp_path, capsys, no_model, seed):
    line = _fails_early(capsys, ["--dataset", "digits", "--seed", seed], tmp_path / "run", "seed=")
    assert "expected an integer in [0, 2147483647]" in line
    assert not os.path.exists(tmp_path / "run")  # checked before anything is written


def test_validation_fraction_that_holds_out_nothing(tmp_path, capsys, no_model):
    # 4 images per class: round(4 x 0.1) = 0 for both classes.
    data = _folder(tmp_path / "data", per_class=4)
    _fails_early(
        capsys,
        ["--data", data, "--val-fraction", "0.1", "--batch-size", "2"],
        tmp_path / "run",
        "--val-fraction 0.1 holds out no image",
    )


def test_validation_folder_without_images(tmp_path, capsys, no_model):
    data = _folder(tmp_path / "data", per_class=8, val_per_class=0)
    _fails_early(
        capsys,
        ["--data", data, "--batch-size", "2"],
        tmp_path / "run",
        "val: no images in its class folders (cat, dog): add validation images or remove val/",
    )


def test_fewer_training_images_than_one_global_batch(tmp_path, capsys, no_model):
    data = _folder(tmp_path / "data", per_class=4, val_per_class=2)
    # --steps-per-epoch does not hide it: the input pipeline would have no whole batch to give.
    _fails_early(
        capsys,
        ["--data", data, "--batch-size", "16", "--steps-per-epoch", "3"],
        tmp_path / "run",
        "8 training images are fewer than one global batch of 16",
    )


def test_no_class_folders(tmp_path, capsys, no_model):
    (tmp_path / "data" / "train").mkdir(parents=True)
    _fails_early(
        capsys, ["--data", str(tmp_path / "data")], tmp_path / "run", "train: no class folders"
    )


def test_a_single_class(tmp_path, capsys, no_model):
    data = _folder(tmp_path / "data", per_class=8, classes=("cat",), val_per_class=2)
    _fails_early(
        capsys,
        ["--data", data, "--batch-size", "2"],
        tmp_path / "run",
        "a classifier needs at least 2",
    )


def test_tfrecord_without_records(tmp_path, capsys, no_model):
    empty = _tfrecord(tmp_path / "train-0.tfrecord", 0)
    _fails_early(capsys, ["--tfrecord", empty], tmp_path / "run", "the shards hold no records")
    train = _tfrecord(tmp_path / "full-0.tfrecord", 8)
    _fails_early(
        capsys,
        ["--tfrecord", train, "--val-tfrecord", empty, "--batch-size", "2"],
        tmp_path / "run",
        f"--val-tfrecord {empty!r}: the shards hold no records",
    )


def test_tfrecord_hold_out_of_nothing(tmp_path, capsys, no_model):
    train = _tfrecord(tmp_path / "train-0.tfrecord", 6)
    _fails_early(
        capsys,
        ["--tfrecord", train, "--val-fraction", "0.01", "--batch-size", "2"],
        tmp_path / "run",
        "--val-fraction 0.01 holds out none of the 6 records",
    )


def test_missing_weights_file(tmp_path, capsys, no_model):
    _fails_early(
        capsys,
        ["--dataset", "digits", "--weights", str(tmp_path / "none.h5")],
        tmp_path / "run",
        "none.h5 does not exist",
    )


def test_train_checks_the_data_it_is_given_before_building_the_model(tmp_path, no_model):
    # The library entry point, with data from no reader of this package: the same checks hold.
    import dataclasses

    from keras_resnest.training.data import digits_data
    from keras_resnest.training.loop import TrainConfig, train

    digits = digits_data(32)
    config = TrainConfig(model_name="resnest14d", image_size=32, epochs=1, batch_size=16)
    cases = [
        (
            dataclasses.replace(digits, val_source=digits.val_source.take(0), val_size=0),
            "validation split is empty",
        ),
        (
            dataclasses.replace(digits, train_size=15),
            "15 training images are fewer than one global batch of 16",
        ),
        (dataclasses.replace(digits, class_names=["0"]), "a classifier needs at least 2"),
    ]
    for data, expected in cases:
        with pytest.raises(ValueError, match=expected):
            train(config, data, str(tmp_path / "run"), log=lambda *a, **k: None)
        assert not (tmp_path / "run" / "backup").exists()


@pytest.mark.slow
def test_training_goes_on_without_tensorboard_and_says_so_once_before_the_first_step(
    tmp_path, monkeypatch
):
    from keras_resnest.training.data import digits_data
    from keras_resnest.training.loop import TrainConfig, train

    # As if TensorBoard were not installed: tf.summary.scalar imports it at each call.
    for name in [n for n in sys.modules if n == "tensorboard" or n.startswith("tensorboard.")] + [
        "tensorboard"
    ]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(
        Exception, match="TensorBoard is not installed"
    ):  # what ended runs after epoch 1
        tf.summary.scalar("probe", 1.0, step=0)

    messages = []
    run_dir = tmp_path / "run"
    config = TrainConfig(
        model_name="resnest14d",
        image_size=32,
        epochs=2,
        batch_size=16,
        steps_per_epoch=1,
        warmup_epochs=0,
        checkpoint_every=100,
    )
    result = train(config, digits_data(32), str(run_dir), log=messages.append)
    warnings = [i for i, m in enumerate(messages) if "TensorBoard" in m]
    assert len(warnings) == 1, messages
    assert "not installed" in messages[warnings[0]]
    first_epoch = next(i for i, m in enumerate(messages) if m.startswith("epoch 1/"))
    assert warnings[0] < first_epoch  # said at the start, not when the first write fails
    assert [row["epoch"] for row in result["history"]] == [0, 1]
    assert (run_dir / "model.keras").exists()
    logs = run_dir / "logs"
    assert not logs.exists() or not any(name.startswith("events.out") for name in os.listdir(logs))


# ---------------------------------------------------------------- a folder of another run


def _saved_digits_run(run_dir, *options):
    """A run folder as `train --model resnest14d --dataset digits OPTIONS` leaves it, as far as
    the resume check reads it: its record and a backup checkpoint (no real training)."""
    from keras_resnest.commands.main import build_parser
    from keras_resnest.commands.train import config_from_args
    from keras_resnest.training import run_record

    args = build_parser().parse_args(
        ["train", "--model", "resnest14d", "--dataset", "digits", *options, "-o", str(run_dir)])
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"\n')
    run_record.write_record(str(run_dir), config_from_args(args).resolved(),
                            run_record.data_source(dataset="digits"), [str(d) for d in range(10)])
    return run_dir


def test_a_folder_of_another_run_stops_the_command_before_the_data_is_read(
    tmp_path, capsys, monkeypatch, no_model
):
    from keras_resnest.commands import train as train_cli
    from keras_resnest.training import strategy as strategy_lib

    def not_reached(*args, **kwargs):
        raise AssertionError("reached after the check")

    monkeypatch.setattr(train_cli, "load_data", not_reached)
    monkeypatch.setattr(strategy_lib, "make_strategy", not_reached)
    run_dir = _saved_digits_run(tmp_path / "run")
    saved = (run_dir / "train_config.json").read_text()
    code = main(["train", "--model", "resnest26d", "--dataset", "digits", "--ema", "0.999",
                 "-o", str(run_dir)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == [
        f"{ERROR}{run_dir} holds a run with other options (model resnest14d -> resnest26d; EMA "
        "off -> 0.999): rerun with the same options, or choose a new -o folder."
    ]
    assert (run_dir / "train_config.json").read_text() == saved


def test_a_folder_of_the_same_run_resumes_with_options_its_checkpoint_takes(tmp_path, no_model):
    # More epochs, another size, learning rate and batch: past the check, up to the model build.
    run_dir = _saved_digits_run(tmp_path / "run", "--epochs", "2")
    with pytest.raises(AssertionError, match="the model was built"):
        main(["train", "--model", "resnest14d", "--dataset", "digits", "--epochs", "8",
              "--image-size", "64", "--lr", "0.05", "--batch-size", "8", "-o", str(run_dir)])
    from tests.helpers.training_runs import read_json

    assert read_json(run_dir / "train_config.json")["epochs"] == 8  # the new run's record


def test_train_compares_the_classes_of_the_data_it_is_given(tmp_path, no_model):
    # The library entry point: other class names of the same count would restore a head whose
    # outputs mean other classes.
    import dataclasses

    from keras_resnest.training.data import digits_data
    from keras_resnest.training.loop import TrainConfig, train

    run_dir = _saved_digits_run(tmp_path / "run")
    letters = dataclasses.replace(digits_data(32), class_names=list("abcdefghij"))
    config = TrainConfig(model_name="resnest14d", image_size=32, epochs=10)
    with pytest.raises(ValueError, match=r"classes 10 \(0, 1, 2, 3, 4, \.\.\.\) -> 10 "
                                         r"\(a, b, c, d, e, \.\.\.\)\): rerun with the same"):
        train(config, letters, str(run_dir), log=lambda *a, **k: None)
