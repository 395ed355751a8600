"""`predict-batch` where the data lives: images, model, labels and outputs in a bucket.

Each object store runs on 127.0.0.1 for this module only (`store_emulators/`): a
GCS emulator for `gs://`, moto's S3 server for `s3://`, reached by the real clients Beam's
`gcsio` and `s3io` use. Per store, one run of the command as a user runs it: the DirectRunner
with two worker processes, in an empty working directory, the model deleted from the local disk
once uploaded (the workers can only read it from the bucket). The model is a small saved
ResNeSt-14d (32 px, 4 classes, untrained, fixed seed): its scores only have to match
single-process `predict`.
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_resnest.commands.main import main

import store_emulators as object_stores
from tests.helpers import scratch

SIZE = 32
CLASSES = ["cat", "dog", "fox", "owl"]
GOOD = 8
COMMAND = os.path.join(os.path.dirname(sys.executable), "keras-resnest")
PREFIX = "keras-resnest predict-batch: error: "


def encoded(pixels, image_format):
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(model file bytes, {key: image bytes}, {key: bad file bytes}, {key: probabilities})."""
    import keras

    import keras_resnest
    from keras_resnest.images import read_for_eval

    with scratch.module_folder(tmp_path_factory, "stores_model") as root:
        keras.utils.set_random_seed(0)
        model = keras_resnest.create_model("resnest14d", weights=None,
                                           input_shape=(SIZE, SIZE, 3), classes=len(CLASSES))
        model.save(root / "model.keras")
        model_bytes = (root / "model.keras").read_bytes()
    rng = np.random.default_rng(0)
    images = {}
    for index in range(GOOD):
        height, width = rng.integers(32, 64, size=2)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        # Half in a subfolder: the glob's "**" must cross folders in a bucket too.
        folder = "photos/more/" if index % 2 else "photos/"
        images[f"{folder}image{index}.{'png' if index % 3 else 'jpg'}"] = encoded(
            pixels, "PNG" if index % 3 else "JPEG")
    bad = {"photos/notes.jpg": b"not an image", "photos/more/empty.png": b""}
    expected = model.predict(np.stack([read_for_eval(blob, SIZE)[0] for blob in
                                       images.values()]), verbose=0)
    return model_bytes, images, bad, dict(zip(images, expected))


@pytest.fixture(scope="module", params=["gs", "s3"])
def store(request, tmp_path_factory, data):
    """A started store holding bucket "data" (images, models/model.keras, its
    class_names.json, labels.txt and a weights mirror) and an empty bucket "out"; stopped
    after this module's tests of it."""
    model_bytes, images, bad, _ = data
    start = object_stores.gcs_emulator if request.param == "gs" else object_stores.s3_server
    with scratch.module_folder(tmp_path_factory, f"store_{request.param}") as root, \
            start(root) as running:
        running.create_bucket("data")
        running.create_bucket("out")
        for key, blob in {**images, **bad}.items():
            running.upload("data", key, blob)
        running.upload("data", "models/model.keras", model_bytes)
        running.upload("data", "models/class_names.json", json.dumps(CLASSES).encode())
        running.upload("data", "labels.txt", ("\n".join(name.upper() for name in CLASSES)
                                              + "\n").encode())
        yield running


def read_jsonl(store, bucket, prefix):
    return [json.loads(line) for key in store.keys(bucket, prefix)
            for line in store.download(bucket, key).decode().splitlines()]


@pytest.mark.slow
def test_two_workers_read_everything_from_the_bucket_and_write_back(store, data, tmp_path):
    _, images, bad, expected = data
    # The class names of a remote model: class_names.json beside it on gs://, --labels on s3://.
    labels = [] if store.scheme == "gs" else ["--labels", store.url("data", "labels.txt")]
    names = CLASSES if store.scheme == "gs" else [name.upper() for name in CLASSES]
    workdir = tmp_path / "empty"  # nothing of the launcher's here: the model is only remote
    workdir.mkdir()
    result = subprocess.run(
        [COMMAND, "predict-batch", "--input", store.url("data", "photos/**"),
         "--output", store.url("out", "run/predictions"),
         "--weights", store.url("data", "models/model.keras"), *labels, "--top", "4",
         "--runner", "DirectRunner", "--direct_num_workers=2",
         "--direct_running_mode=multi_processing", *store.beam_options],
        capture_output=True, text=True, timeout=900, cwd=workdir, env=store.env)
    assert result.returncode == 0, result.stderr[-5000:]
    assert result.stdout.splitlines() == [
        f"predicted   {GOOD} images -> {store.url('out', 'run/predictions')}-?????-of-?????"
        ".jsonl",
        f"unreadable  {len(bad)} files -> {store.url('out', 'run/predictions')}-errors-"
        "?????-of-?????.jsonl"], result.stdout
    assert os.listdir(workdir) == []

    rows = read_jsonl(store, "out", "run/predictions-0")
    assert sorted(row["path"] for row in rows) == sorted(store.url("data", key)
                                                         for key in images)  # each once
    for row in rows:
        key = row["path"].split("/", 3)[3]
        scores = dict(zip(row["labels"], row["scores"]))
        np.testing.assert_allclose([scores[name] for name in names], expected[key], atol=1e-5)
    errors = read_jsonl(store, "out", "run/predictions-errors-")
    assert sorted(error["path"] for error in errors) == sorted(store.url("data", key)
                                                               for key in bad)
    # Beam's temporary files are gone: only the shards are in the output bucket.
    assert all(key.startswith("run/predictions-") for key in store.keys("out")), \
        store.keys("out")


def error_lines(argv, store, capsys):
    code = main(["predict-batch", *argv, *store.beam_options])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2, lines
    return lines


def test_missing_buckets_and_model_are_one_line_each(store, capsys):
    lines = error_lines(["--input", store.url("nobucket", "photos/*.jpg"),
                         "--output", store.url("nobucket-out", "p"),
                         "--weights", store.url("data", "models/missing.keras")], store, capsys)
    scheme = store.scheme
    assert lines == [
        f"{PREFIX}--input {scheme}://nobucket/photos/*.jpg: expected a glob in a readable "
        f"bucket, bucket {scheme}://nobucket does not exist",
        f"{PREFIX}--output {scheme}://nobucket-out/p: expected a prefix in a writable bucket, "
        f"bucket {scheme}://nobucket-out does not exist",
        f"{PREFIX}--weights {scheme}://data/models/missing.keras: expected a .keras model "
        "file, no such file"], lines


def test_a_glob_matching_nothing_and_a_missing_mirror_file_are_one_line_each(
        store, capsys, monkeypatch):
    from keras_resnest.weights import pretrained

    monkeypatch.setenv(pretrained.MIRROR_ENV, store.url("data", "mirror"))
    lines = error_lines(["--input", store.url("data", "nothing/*.jpg"),
                         "--output", store.url("out", "p"), "--model", "resnest14d",
                         "--weights", "imagenet", "--labels", store.url("data", "no.txt")],
                        store, capsys)
    filename = pretrained.pretrained_file("resnest14d").filename
    assert lines == [
        f"{PREFIX}--input {store.url('data', 'nothing/*.jpg')}: expected a glob matching "
        "image files, no file matches",
        f"{PREFIX}--labels {store.url('data', 'no.txt')}: expected a labels file, no such file",
        f"{PREFIX}{pretrained.MIRROR_ENV}={store.url('data', 'mirror')}/{filename}: expected "
        "the official weights file of resnest14d, no such file"], lines


def test_dataflow_refuses_paths_on_this_machine(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(encoded(np.zeros((40, 40, 3), np.uint8), "PNG"))
    code = main(["predict-batch", "--input", str(tmp_path / "*.png"), "--output",
                 str(tmp_path / "out"), "--weights", "none", "--runner", "DataflowRunner"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and lines == [
        f"{PREFIX}{flag} {path}: expected a path the DataflowRunner's workers can read "
        "(gs://...), got a path on this machine"
        for flag, path in [("--input", tmp_path / "*.png"), ("--output", tmp_path / "out")]]


def test_a_bucket_mirror_serves_imagenet_weights(store, tmp_path, monkeypatch):
    """KERAS_RESNEST_WEIGHTS_URL=gs://... (or s3://): the official file comes from the bucket,
    through Beam's FileSystems, verified by its hash like a download."""
    import hashlib

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_resnest.weights import pretrained

    blob = b"checkpoint bytes " * 1000
    name = f"resnest14d-{hashlib.sha256(blob).hexdigest()[:8]}.pth"
    store.upload("data", f"mirror/{name}", blob)
    monkeypatch.setitem(pretrained.PRETRAINED_FILES, "resnest14d",
                        pretrained.PretrainedFile(name, "https://unreachable.invalid/"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(pretrained.MIRROR_ENV, store.url("data", "mirror"))
    FileSystems.set_options(PipelineOptions(store.beam_options))
    path = pretrained.fetch_checkpoint("resnest14d")
    assert path == str(tmp_path / "home" / "models" / name)
    with open(path, "rb") as file:
        assert file.read() == blob


def test_the_workers_get_the_launchers_weights_mirror(monkeypatch):
    """The handler carries KERAS_RESNEST_WEIGHTS_URL to workers whose environment lacks it
    (Dataflow's, Flink's, Spark's)."""
    from keras_resnest import model_source
    from keras_resnest.beam.model_handler import ResNeStModelHandler
    from keras_resnest.weights import pretrained

    handler = pickle.loads(pickle.dumps(ResNeStModelHandler(
        "resnest14d", "imagenet", SIZE, weights_mirror="gs://mirror/resnest")))
    monkeypatch.setenv(pretrained.MIRROR_ENV, "recorded, so that the worker's value is undone")
    monkeypatch.delenv(pretrained.MIRROR_ENV)
    seen = []

    def load(model_name, weights, image_size):
        seen.append((weights, os.environ.get(pretrained.MIRROR_ENV)))
        raise RuntimeError("loaded")

    monkeypatch.setattr(model_source, "load_model_for_export", load)
    with pytest.raises(RuntimeError, match="loaded"):
        handler.load_model()
    assert seen == [("imagenet", "gs://mirror/resnest")]
