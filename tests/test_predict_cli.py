"""`keras-resnest predict` with a model the user trained: the `.keras` file is the model.

A tiny fine-tuned classifier (ResNeSt-14d, 32 px, 10 classes; untrained: the numbers only have
to match `model.predict`) is saved as `keras-resnest train` saves it: `model.keras` with
`class_names.json` beside it.
"""
import json
import re

import numpy as np
import pytest
from PIL import Image

import keras_resnest
from keras_resnest import images as reader
from keras_resnest import predict as predict_lib
from keras_resnest.commands.main import main
from keras_resnest.predict import load_images

from tests.helpers import odd_images, scratch

SIZE = 32
CLASSES = [f"class_{chr(ord('a') + i)}" for i in range(10)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, model, two image paths)."""
    from keras_resnest.training.finetune import build_classifier

    with scratch.module_folder(tmp_path_factory, "predict") as root:
        run = root / "run"
        run.mkdir()
        model = build_classifier("resnest14d", num_classes=len(CLASSES), image_size=SIZE,
                                 weights=None)
        model.save(run / "model.keras")
        (run / "class_names.json").write_text(json.dumps(CLASSES))
        rng = np.random.default_rng(0)
        images = []
        for index, shape in enumerate([(40, 56, 3), (64, 48, 3)]):
            path = root / f"image{index}.png"
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
            images.append(str(path))
        yield run, model, images


def expected_lines(model, images, top, names):
    """What predict must print: each image, then its `top` classes by `model.predict`."""
    probabilities = model.predict(load_images(images, SIZE), verbose=0)
    lines = []
    for path, row in zip(images, probabilities):
        lines.append(path)
        for rank, index in enumerate(np.argsort(-row, kind="stable")[:top], start=1):
            lines.append(f"  {rank}. {row[index]:.4f}  {names[index]}")
    return lines


def predict(argv, capsys):
    code = main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_fine_tuned_keras_model_with_its_class_names(trained, capsys):
    run, model, images = trained
    # The default --model (resnest50, 1000 classes) is what failed before: the file decides.
    code, out, err = predict([*images, "--weights", run / "model.keras", "--top", "3"], capsys)
    assert code == 0, err
    assert out == expected_lines(model, images, 3, CLASSES)

    code, out, err = predict([images[0], "--weights", run / "model.keras", "--model",
                              "resnest14d"], capsys)
    assert code == 0, err
    assert out == expected_lines(model, images[:1], 5, CLASSES)  # default top 5


def test_labels_file_names_the_classes(trained, tmp_path, capsys):
    run, model, images = trained
    labels = [f"label {i}" for i in range(len(CLASSES))]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n")
    code, out, err = predict([images[1], "--weights", run / "model.keras", "--labels",
                              labels_file, "--top", "10"], capsys)
    assert code == 0, err
    assert out == expected_lines(model, images[1:], 10, labels)


def test_without_class_names_the_classes_are_numbered(trained, tmp_path, capsys):
    run, model, images = trained
    copy = tmp_path / "model.keras"
    copy.write_bytes((run / "model.keras").read_bytes())  # no class_names.json beside it
    code, out, err = predict([images[0], "--weights", copy, "--top", "2"], capsys)
    assert code == 0, err
    assert out == expected_lines(model, images[:1], 2, [str(i) for i in range(len(CLASSES))])


def write_not_a_classifier(folder):
    path = folder / "backbone.keras"
    keras_resnest.create_model("resnest14d", weights=None, include_top=False, pooling="avg",
                               input_shape=(SIZE, SIZE, 3)).save(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("labels_count", r"--labels .*labels\.txt has 9 class names but the model has 10 classes"),
    ("class_names_count", r"class_names\.json has 11 class names but the model has 10 classes"),
    ("class_names_not_a_list", r"class_names\.json: expected a JSON list of class names"),
    ("not_a_classifier", r"expected a classifier ending in a Dense layer named 'fc'"),
    ("not_a_keras_file", r"not a \.keras model \(expected a zip archive\)"),
    ("other_size", r"built for 32x32 inputs"),
    ("top_above_classes", r"--top 11: the model has only 10 classes"),
    ("missing_labels", r"--labels .*nope\.txt: no such file"),
])
def test_mismatches_are_one_line(trained, tmp_path, capsys, case, message):
    run, _, images = trained
    model_file = tmp_path / "model.keras"
    model_file.write_bytes((run / "model.keras").read_bytes())
    extra = []
    if case == "labels_count":
        (tmp_path / "labels.txt").write_text("\n".join(CLASSES[:9]))
        extra = ["--labels", tmp_path / "labels.txt"]
    elif case == "class_names_count":
        (tmp_path / "class_names.json").write_text(json.dumps(CLASSES + ["extra"]))
    elif case == "class_names_not_a_list":
        (tmp_path / "class_names.json").write_text(json.dumps({"0": "a"}))
    elif case == "not_a_classifier":
        model_file = write_not_a_classifier(tmp_path)
    elif case == "not_a_keras_file":
        model_file.write_text("not a zip")
    elif case == "other_size":
        extra = ["--size", "64"]
    elif case == "top_above_classes":
        extra = ["--top", "11"]
    elif case == "missing_labels":
        extra = ["--labels", tmp_path / "nope.txt"]
    code, out, err = predict([images[0], "--weights", model_file, *extra], capsys)
    assert code == 2 and out == []
    assert err.count("\n") == 1 and err.startswith("keras-resnest predict: error: "), err
    assert re.search(message, err), err


def test_imagenet_head_keeps_wordnet_names(trained, capsys):
    _, _, images = trained
    code, out, err = predict([images[0], "--model", "resnest14d", "--weights", "none",
                              "--size", "64", "--top", "2"], capsys)
    assert code == 0, err
    assert out[0] == images[0] and len(out) == 3
    names = {f"{name} ({wordnet_id})" for wordnet_id, name in keras_resnest.imagenet_classes()}
    assert all(line.split("  ", 2)[2] in names for line in out[1:]), out


def test_every_odd_file_is_named_once_and_the_others_are_predicted(trained, tmp_path, capsys):
    run, model, images = trained
    odd = []
    for name, data in odd_images.odd_files().items():
        (tmp_path / name).write_bytes(data)
        odd.append(str(tmp_path / name))
    paths = [images[0], *odd, str(tmp_path / "missing.png"), images[1]]
    code, out, err = predict([*paths, "--weights", run / "model.keras", "--top", "3",
                              "--batch-size", "4"], capsys)
    assert code == 1
    reasons = {path: reader.read_for_eval(path, SIZE)[1] for path in paths}
    usable = [path for path in paths if reasons[path] is None]
    # The 16-bit, palette, alpha, CMYK and animated files are predicted as read; a 1-pixel
    # side has no 32-pixel crop (at 224 it has: tests/test_images.py).
    assert {"grey16.png", "palette.png", "rgba.png", "cmyk.jpg", "animated.gif"} <= {
        path.rsplit("/", 1)[-1] for path in usable}
    assert "too small for the 32-pixel evaluation crop" in reasons[str(tmp_path /
                                                                     "one_pixel_high.png")]
    assert out == expected_lines(model, usable, 3, CLASSES)
    bad = [path for path in paths if reasons[path] is not None]
    assert err.splitlines() == [f"keras-resnest predict: error: {path}: {reasons[path]}"
                                for path in bad] + [
        f"keras-resnest predict: {len(bad)} of {len(paths)} files could not be used "
        "(named above)"]


def test_predict_files_reads_one_batch_at_a_time(trained, monkeypatch):
    _, model, images = trained
    reads = []

    def counting_read(path, size):
        reads.append(path)
        return reader.read_for_eval(path, size)

    monkeypatch.setattr(predict_lib, "read_for_eval", counting_read)
    stream = predict_lib.predict_files(model, images * 5, SIZE, top=1, batch_size=3)
    first = next(stream)
    assert first.path == images[0] and first.reason is None
    assert len(reads) == 3  # the first batch only: memory does not grow with the file count
    assert len(list(stream)) == 9 and len(reads) == 10
