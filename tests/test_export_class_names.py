"""A fine-tuned model exports with its class names: the `class_names.json` that `train` writes
beside `model.keras`, or `--labels` as JSON (that same file) or plain text."""
import json

import pytest

import keras_resnest
from keras_resnest.commands import main as cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """What `train` leaves: model.keras and class_names.json (a small random model)."""
    root = tmp_path_factory.mktemp("run")
    model = keras_resnest.create_model("resnest14d", weights=None, classes=3,
                                       input_shape=(32, 32, 3))
    model.save(root / "model.keras")
    (root / "class_names.json").write_text(json.dumps(["cat", "dog", "fox"]))
    return root


def export(argv, capsys):
    code = cli.main(["export", "--format", "saved_model", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # a SavedModel export: about 8 s
def test_class_names_json_beside_the_model_are_exported(run_dir, tmp_path, capsys):
    code, out, err = export(["--weights", run_dir / "model.keras", "-o", tmp_path / "sm"], capsys)
    assert code == 0, err
    assert f"class names from {run_dir / 'class_names.json'}" in out
    assert (tmp_path / "sm" / "assets" / "labels.txt").read_text().split() == [
        "cat", "dog", "fox"]


@pytest.mark.slow  # two SavedModel exports: about 20 s
def test_labels_takes_json_and_text(run_dir, tmp_path, capsys):
    (tmp_path / "names.json").write_text(json.dumps(["a", "b", "c"]))
    (tmp_path / "names.txt").write_text("x\ny\nz\n")
    for labels, expected in (("names.json", ["a", "b", "c"]), ("names.txt", ["x", "y", "z"])):
        code, _, err = export(["--weights", run_dir / "model.keras", "--labels",
                               tmp_path / labels, "-o", tmp_path / f"sm_{labels}"], capsys)
        assert code == 0, err
        assert (tmp_path / f"sm_{labels}" / "assets" / "labels.txt").read_text().split() == (
            expected)


def test_labels_refused_where_no_names_are_kept(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    code, _, err = export(["--weights", "none", "--model", "resnest14d", "--labels",
                           tmp_path / "bad.json", "-o", tmp_path / "sm"], capsys)
    assert code == 2 and "expected a JSON list of class names (strings); got dict" in err, err
    code = cli.main(["export", "--format", "tflite", "--weights", "none", "--labels",
                     str(tmp_path / "bad.json"), "-o", str(tmp_path / "m.tflite")])
    err = capsys.readouterr().err
    assert code == 2 and "--labels applies to --format saved_model and serving, not tflite" in err
