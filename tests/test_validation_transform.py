"""Training validation is the official evaluation transform.

A short `keras-resnest train` run on large, finely textured images (600x500 stripes and
checkerboards of one-pixel period, which any other resize or crop turns into other pixels)
writes `evaluation.json`; the same saved model, fed the official PIL transform
(`keras_resnest.weights.reference.official_eval_crop`) of the same validation images, must make
the same predictions: the same top-1 and the same confusion matrix. (Measured once: the
transform validation used before, a bilinear resize without antialiasing, predicted other
classes for most of these images.)
"""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_resnest
from keras_resnest.weights.reference import official_eval_crop

from tests.helpers.training_runs import read_json, train_env

SIZE = 32
WIDTH, HEIGHT = 600, 500
TEXTURES = ("checkerboard", "horizontal", "vertical")  # class folders, in training's order


def textured_image(texture, rng):
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    pattern = {
        "horizontal": rows % 2,
        "vertical": columns % 2,
        "checkerboard": (rows + columns) % 2,
    }[texture]
    contrast = rng.uniform(60, 120)
    image = 128 + contrast * (pattern - 0.5)[..., None] + rng.normal(0, 20, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def write_folder(root, rng, per_class):
    paths = []
    for label, texture in enumerate(TEXTURES):
        folder = root / texture
        folder.mkdir(parents=True)
        for index in range(per_class):
            path = folder / f"{index}.png"
            textured_image(texture, rng).save(path)
            paths.append((path, label))
    return paths


@pytest.mark.slow
def test_evaluation_json_matches_the_official_pil_transform(tmp_path):
    rng = np.random.default_rng(0)
    write_folder(tmp_path / "data" / "train", rng, per_class=4)
    validation = write_folder(tmp_path / "data" / "val", rng, per_class=4)
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_resnest.training",
            "--model",
            "resnest14d",
            "--data",
            str(tmp_path / "data"),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--image-size",
            str(SIZE),
            "--strategy",
            "none",
            "--seed",
            "0",
            "-o",
            str(run),
        ],
        capture_output=True,
        text=True,
        env=train_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(run / "evaluation.json")
    assert report["class_names"] == list(TEXTURES)

    model = keras_resnest.load_model(run / "model.keras", compile=False)
    images = np.stack([official_eval_crop(Image.open(path), SIZE) for path, _ in validation])
    labels = np.array([label for _, label in validation])
    predictions = model.predict(images, verbose=0).argmax(axis=1)
    matrix = np.zeros((len(TEXTURES), len(TEXTURES)), int)
    np.add.at(matrix, (labels, predictions), 1)
    assert report["confusion_matrix"] == matrix.tolist()
    assert report["top1"] == float(np.mean(predictions == labels))
