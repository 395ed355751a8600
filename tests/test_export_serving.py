"""TF-Serving package: the contract the server relies on, proven without the server binary.

The served graph is checked in a fresh interpreter that never imports keras or keras_resnest
(tests/helpers/serving_contract_probe.py), against the Keras model computed here.
"""
import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_resnest.export import client, image_transform, serving
from keras_resnest.imagenet import imagenet_classes
from keras_resnest.images import DEFAULT_MAX_PIXELS

from tests.helpers import export_helpers as helpers
from tests.helpers import scratch

pytestmark = pytest.mark.slow  # the whole file: see `make test-fast`

PROBE = Path(__file__).parent / "helpers" / "serving_contract_probe.py"
TOLERANCE = 1e-5  # relative, the target for the float signature


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def package():
    return helpers.serving_package()


def packages_without_keras(directory):
    """A package directory: links to everything in TensorFlow's site-packages except keras,
    tf_keras, keras_resnest (its editable finder) and .pth files."""
    site_packages = Path(tf.__file__).resolve().parent.parent
    directory.mkdir()
    for entry in site_packages.iterdir():
        name = entry.name.lower()
        if name.startswith(("keras", "tf_keras", "__editable__")) or name.endswith(".pth"):
            continue
        (directory / entry.name).symlink_to(entry)
    return directory


@pytest.fixture(scope="module")
def probe_result(package, tmp_path_factory):
    """Run the probe once: its outputs, report and the inputs it was given."""
    with scratch.module_folder(tmp_path_factory, "probe") as work:
        packages = packages_without_keras(work / "site-packages")
        rng = np.random.default_rng(0)
        float_images = np.stack(
            [helpers.natural_image(64, 64, seed) for seed in range(3)]
        ).astype(np.float32)
        float_images[2] = rng.uniform(0, 255, float_images[2].shape)  # one noise image too
        encoded = helpers.sample_encoded_images()
        files = {f"image_bytes_{i}": np.frombuffer(data, np.uint8)
                 for i, data in enumerate(encoded)}
        np.savez(work / "inputs.npz", image=float_images, **files)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run(
            [sys.executable, "-S", str(PROBE), str(packages), str(package),
             str(work / "inputs.npz"), str(work)],
            check=True, env=env, timeout=600,
        )
        outputs = dict(np.load(work / "outputs.npz", allow_pickle=False))
        report = json.loads((work / "report.json").read_text())
        return outputs, report, float_images, encoded


def test_package_layout_and_server_configs(package):
    root = package.parent.parent
    assert package == root / "resnest14d" / "1"
    for name in ("saved_model.pb", "variables", "assets/labels.txt",
                 "assets.extra/tf_serving_warmup_requests"):
        assert (package / name).exists(), name
    config = text_format.Parse(
        (root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "resnest14d", "/models/resnest14d", "tensorflow")
    batching = dict(
        line.replace("{ value:", "").rstrip(" }").split()
        for line in (root / "batching.config").read_text().splitlines()
    )
    assert {k: int(v) for k, v in batching.items()} == serving.BATCHING_PARAMETERS
    assert not [p for p in root.rglob(".*partial*")], "temporary files left behind"


def test_served_graph_needs_no_keras_and_no_custom_or_xla_ops(probe_result):
    _, report, _, _ = probe_result
    assert report["imported_keras"] == [] and not report["keras_importable"]
    assert report["graph"]["xla_must_compile"] == []
    assert report["graph"]["unregistered_ops"] == []
    # The decode and the transform really are graph ops.
    assert {"DecodeJpeg", "DecodeImage", "ScaleAndTranslate"} <= set(report["graph"]["ops"])


def test_a_decompression_bomb_is_refused_before_decoding_and_serving_goes_on(probe_result):
    _, report, _, _ = probe_result
    bomb = report["bomb"]
    print(bomb)  # the measured figures (pytest -s)
    assert bomb["max_pixels"] == DEFAULT_MAX_PIXELS == 50_000_000
    assert bomb["bomb_bytes"] < 1_000_000
    assert bomb["refusal"] is not None, "the 225-megapixel PNG was decoded"
    assert "15000 x 15000 pixels is over the limit of 50000000 pixels" in bomb["refusal"]
    # Decoded, its 3-channel image alone would be 675 MB.
    assert bomb["peak_memory_growth_mb"] < 100, bomb
    assert bomb["serves_after"]


def test_saved_model_cli_shows_the_serving_signatures(probe_result):
    _, report, _, _ = probe_result
    signatures = report["saved_model_cli"]
    assert {"serving_default", "serving_bytes"} <= set(signatures)
    expected_outputs = {
        "probabilities": {"dtype": "DT_FLOAT", "shape": "(-1, 1000)"},
        "classes": {"dtype": "DT_INT64", "shape": "(-1, 5)"},
        "scores": {"dtype": "DT_FLOAT", "shape": "(-1, 5)"},
        "labels": {"dtype": "DT_STRING", "shape": "(-1, 5)"},
    }
    assert signatures["serving_default"] == {
        "inputs": {"image": {"dtype": "DT_FLOAT", "shape": "(-1, 64, 64, 3)"}},
        "outputs": expected_outputs,
        "method": "tensorflow/serving/predict",
    }
    assert signatures["serving_bytes"] == {
        "inputs": {"image_bytes": {"dtype": "DT_STRING", "shape": "(-1)"}},
        "outputs": expected_outputs,
        "method": "tensorflow/serving/predict",
    }


def test_every_warmup_record_replays_through_its_signature(probe_result):
    _, report, _, _ = probe_result
    replays = report["warmup"]
    assert sorted(r["signature"] for r in replays) == ["serving_bytes", "serving_default"]
    for replay in replays:
        assert replay["model_name"] == "resnest14d"
        assert replay["outputs"]["probabilities"] == [1, 1000]
        assert replay["outputs"]["labels"] == [1, 5]
        assert replay["finite"]
    assert {r["signature"]: r["inputs"] for r in replays} == {
        "serving_default": ["image"], "serving_bytes": ["image_bytes"]}


def check_named_outputs(outputs, prefix, expected_probabilities):
    probabilities = outputs[f"{prefix}/probabilities"]
    assert relative_error(probabilities, expected_probabilities) <= TOLERANCE
    classes, scores = outputs[f"{prefix}/classes"], outputs[f"{prefix}/scores"]
    np.testing.assert_array_equal(np.argsort(-expected_probabilities, axis=1)[:, :5], classes)
    np.testing.assert_allclose(
        scores, np.take_along_axis(expected_probabilities, classes, axis=1), rtol=TOLERANCE,
        atol=1e-7)
    names = np.array([name for _, name in imagenet_classes()])
    np.testing.assert_array_equal(outputs[f"{prefix}/labels"].astype(str), names[classes])


def test_float_signature_equals_keras_model(probe_result):
    outputs, _, float_images, _ = probe_result
    expected = helpers.small_model().predict(float_images, verbose=0)
    check_named_outputs(outputs, "float", expected)


def test_bytes_signature_equals_python_decode_transform_and_keras(probe_result):
    outputs, _, _, encoded = probe_result
    images = np.stack([image_transform.decode_and_transform(tf.constant(data), 64).numpy()
                       for data in encoded])
    expected = helpers.small_model().predict(images, verbose=0)
    check_named_outputs(outputs, "bytes", expected)


def test_labels_ship_as_an_asset(probe_result):
    _, report, _, _ = probe_result
    assert report["labels_asset"] == [name for _, name in imagenet_classes()]


def test_existing_version_is_refused_and_left_untouched(package):
    before = (package / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        serving.export_serving_package(
            helpers.small_model(), package.parent.parent, "resnest14d", version=1)
    assert (package / "saved_model.pb").stat().st_mtime_ns == before


def test_failed_export_leaves_nothing_behind(tmp_path):
    import keras

    inputs = keras.Input((64, 64, 3), name="image")
    headless = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="Dense layer named 'fc'"):
        serving.export_serving_package(headless, tmp_path / "models", "headless", version=3)
    assert [p.name for p in (tmp_path / "models" / "headless").iterdir()] == []


@pytest.mark.parametrize("version", ["0", "-1", "v2", "1.5"])
def test_bad_version_is_refused(tmp_path, version):
    with pytest.raises(ValueError, match="positive integer"):
        serving.export_serving_package(helpers.small_model(), tmp_path, "m", version=version)


def test_overwrite_replaces_a_version_atomically(tmp_path):
    model = helpers.small_model()
    first = serving.export_serving_package(model, tmp_path, "resnest14d", version=2)
    (first / "stale.txt").write_text("old")
    second = serving.export_serving_package(model, tmp_path, "resnest14d", version=2,
                                            overwrite=True)
    assert second == first and not (second / "stale.txt").exists()
    assert (second / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "batching.config", "models.config", "resnest14d"]


@pytest.fixture(scope="module")
def service(package):
    return helpers.SavedModelPredictionService(package)


def test_grpc_client_round_trip(service):
    encoded = helpers.sample_encoded_images()[:2]
    with helpers.grpc_stand_in(service, "resnest14d") as port:
        result = client.grpc_predict(f"127.0.0.1:{port}", "resnest14d", encoded)
    direct = service.predict("serving_bytes", {"image_bytes": tf.constant(encoded)})
    for name in ("classes", "labels"):
        np.testing.assert_array_equal(result[name], direct[name])
    np.testing.assert_allclose(result["scores"], direct["scores"], rtol=1e-6)


def test_rest_client_sends_b64_instances(service):
    encoded = helpers.sample_encoded_images()[:2]
    body = client.rest_request_body(encoded)
    assert body["signature_name"] == "serving_bytes"
    assert [base64.b64decode(row["b64"]) for row in body["instances"]] == encoded

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            assert self.path == "/v1/models/resnest14d:predict"
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # TF-Serving's row format: {"b64": ...} objects become the bytes they encode.
            images = [base64.b64decode(row["b64"]) for row in request["instances"]]
            outputs = service.predict(request["signature_name"],
                                      {"image_bytes": tf.constant(images)})
            rows = [{"labels": [s.decode() for s in outputs["labels"][i]],
                     "scores": outputs["scores"][i].tolist()} for i in range(len(images))]
            payload = json.dumps({"predictions": rows}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rows = client.rest_predict(f"http://127.0.0.1:{server.server_port}", "resnest14d", encoded)
    finally:
        server.shutdown()
    direct = service.predict("serving_bytes", {"image_bytes": tf.constant(encoded)})
    assert [row["labels"] for row in rows] == direct["labels"].astype(str).tolist()
