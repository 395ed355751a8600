"""`weights="hf://..."`, keras-hub's `from_preset("hf://...")` and the offline message of
`weights="imagenet"`, against a local stand-in for the Hugging Face Hub
(tests/helpers/hf_hub_standin.py; tests/conftest.py points HF_ENDPOINT at it).

The timm repositories are made from the official reference with random weights and random
BatchNorm statistics: its state dict (timm's names are the official ones) as `model.safetensors`
beside a timm-style `config.json`.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import safetensors.torch
import torch

import keras_resnest
from keras_resnest.models import resnest
from keras_resnest.weights import hf_hub, pretrained
from keras_resnest.weights.hf_hub import HubWeightsError

from tests.helpers import torch_reference as ref
from tests.helpers.hf_hub_standin import HubStandIn, directory_files

ROOT = Path(__file__).resolve().parents[1]
REPO = "timm/resnest14d.gluon_in1k"
SPEC = f"hf://{REPO}"
HF_PARITY = 1e-5  # max|keras - torch| / max|torch| in float32


def timm_config(architecture="resnest14d"):
    """A config.json as timm writes it (`push_to_hf_hub`): the parts keras_resnest reads and a
    few it does not."""
    return json.dumps({
        "architecture": architecture, "num_classes": 1000, "num_features": 2048,
        "pretrained_cfg": {"tag": "gluon_in1k", "input_size": [3, 224, 224],
                           "interpolation": "bicubic", "crop_pct": 0.875,
                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "num_classes": 1000, "first_conv": "conv1.0", "classifier": "fc"},
    }).encode()


def timm_files(reference, architecture="resnest14d"):
    return {"config.json": timm_config(architecture),
            "model.safetensors": safetensors.torch.save(reference.state_dict())}


@pytest.fixture(scope="module")
def reference():
    return ref.build_randomized("resnest14d", seed=21)


@pytest.fixture
def hub():
    """The stand-in on HF_ENDPOINT's port, with an empty Hugging Face cache."""
    shutil.rmtree(os.environ["HF_HUB_CACHE"], ignore_errors=True)
    standin = HubStandIn()
    yield standin
    standin.stop()


@pytest.fixture
def served(hub, reference):
    hub.repos[REPO] = {"main": timm_files(reference)}
    return hub


@pytest.fixture
def no_build(monkeypatch):
    """Fails the test if a model is built (the error must come from the arguments)."""
    def build(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(resnest, "resnest_features", build)


def one_line_error(call, *args, **kwargs):
    """The message of the HubWeightsError `call` raises: one line, without huggingface_hub's
    exception chained to it."""
    with pytest.raises(HubWeightsError) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert "\n" not in str(error)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return str(error)


def logits_model(name="resnest14d", **kwargs):
    return keras_resnest.create_model(name, classifier_activation=None, **kwargs)


# --- weights="hf://..." ----------------------------------------------------------------------

def outputs(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def test_a_timm_repository_reproduces_the_official_model(served, reference):
    images = ref.random_images(2, 64, 72, seed=1)
    model = logits_model(weights=SPEC)
    error = ref.relative_error(outputs(model, images), ref.logits(reference, images))
    print(f"hf:// resnest14d vs official: {error:.2e}")
    assert error <= HF_PARITY
    # The timm files came through the Hub's routes: config.json directly, model.safetensors
    # through the redirect to the "CDN".
    assert served.requested("model.safetensors") and served.requested("config.json")
    assert any(request["path"].startswith("/cdn/") for request in served.requests)


def test_without_the_head_or_with_another_class_count_the_rest_loads(served, reference):
    """The head rules of weights=<file>."""
    images = ref.random_images(2, 64, 72, seed=1)
    features = keras_resnest.create_model("resnest14d", weights=SPEC, include_top=False)
    error = ref.relative_error(outputs(features, images), ref.features(reference, images))
    print(f"hf:// resnest14d features (include_top=False) vs official: {error:.2e}")
    assert error <= HF_PARITY
    ten = keras_resnest.create_model("resnest14d", weights=SPEC, classes=10)
    assert ten.get_layer("fc").kernel.shape == (2048, 10)
    np.testing.assert_array_equal(ten.get_layer("layer4_0").get_weights()[0],
                                  features.get_layer("layer4_0").get_weights()[0])


def test_a_revision_pins_the_weights(hub):
    first, second = (ref.build_randomized("resnest14d", seed=seed) for seed in (31, 32))
    hub.repos[REPO] = {"main": timm_files(first), "v1": timm_files(second)}
    commit = hub.commit(REPO, "v1")
    for spec, source in ((SPEC, first), (f"{SPEC}@v1", second), (f"{SPEC}@{commit}", second),
                         (f"{SPEC}@main", first)):
        model = keras_resnest.create_model("resnest14d", weights=spec, input_shape=(32, 32, 3))
        np.testing.assert_array_equal(model.get_layer("fc").bias.numpy(),
                                      source.fc.bias.detach().numpy(), err_msg=spec)


def test_a_second_load_comes_from_the_cache_with_the_hub_stopped(served):
    model = keras_resnest.create_model("resnest14d", weights=SPEC, input_shape=(32, 32, 3))
    served.stop()
    again = keras_resnest.create_model("resnest14d", weights=SPEC, input_shape=(32, 32, 3))
    for layer in ("conv1_0", "layer4_0", "fc"):
        for a, b in zip(model.get_layer(layer).get_weights(), again.get_layer(layer).get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a fresh process
def test_offline_mode_reads_the_cache_as_a_user_would(served):
    """HF_HUB_OFFLINE=1 in the environment of a new process, as a user sets it."""
    model = keras_resnest.create_model("resnest14d", weights=SPEC, input_shape=(32, 32, 3))
    served.stop()
    script = textwrap.dedent(f"""
        import keras_resnest
        from keras_resnest.weights.hf_hub import HubWeightsError

        model = keras_resnest.create_model("resnest14d", weights={SPEC!r}, input_shape=(32, 32, 3))
        print(repr(model.get_layer("fc").bias.numpy().tolist()))
        try:
            keras_resnest.create_model("resnest14d", weights="hf://timm/never-downloaded")
        except HubWeightsError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bias, message = result.stdout.strip().splitlines()[-2:]
    assert bias == repr(model.get_layer("fc").bias.numpy().tolist())
    assert message.startswith("hf://timm/never-downloaded: cannot reach the Hub at ")
    assert "; got OfflineModeIsEnabled: " in message


def test_the_token_goes_to_the_hub_and_not_to_the_cdn(served, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_standin_token")
    keras_resnest.create_model("resnest14d", weights=SPEC, input_shape=(32, 32, 3))
    hub_requests = [r for r in served.requests if "/resolve/" in r["path"]]
    cdn_requests = [r for r in served.requests if r["path"].startswith("/cdn/")]
    assert hub_requests and cdn_requests
    assert {r["headers"].get("authorization") for r in hub_requests} == {
        "Bearer hf_standin_token"}
    assert all("authorization" not in r["headers"] for r in cdn_requests)


# --- one-line errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["hf://justname", "hf://", "hf://timm/a/b", "hf://timm/x@",
                                  "hf://timm/bad name"])
def test_a_malformed_repository_name(spec, hub, no_build):
    message = one_line_error(keras_resnest.create_model, "resnest14d", weights=spec)
    assert message == ("a Hugging Face Hub repository is written hf://<owner>/<name>[@<revision>], "
                       "e.g. 'hf://timm/resnest50d.in1k' or 'hf://timm/resnest50d.in1k@main'; "
                       f"got {spec!r}")
    assert hub.requests == []


def test_a_missing_repository(hub, no_build):
    message = one_line_error(keras_resnest.create_model, "resnest14d", weights="hf://timm/nothing")
    assert message == (f"hf://timm/nothing: repository not found on {hub.url} (a private or "
                       "gated one needs HF_TOKEN or `hf auth login`); expected an existing model "
                       "repository; got 'timm/nothing'")


def test_a_missing_revision(served, no_build):
    message = one_line_error(keras_resnest.create_model, "resnest14d", weights=f"{SPEC}@v9")
    assert message == (f"{SPEC}@v9: revision not found in {REPO}; expected a branch, tag or "
                       "commit of that repository; got 'v9'")


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_a_missing_file(missing, served, monkeypatch):
    del served.repos[REPO]["main"][missing]
    if missing == "config.json":  # found from the arguments, before a model is built
        monkeypatch.setattr(resnest, "resnest_features", None)
    message = one_line_error(keras_resnest.create_model, "resnest14d", weights=SPEC)
    assert message == (f"{SPEC}: {missing} not found at revision 'main'; expected timm's layout, "
                       f"config.json and model.safetensors; got a repository without {missing}")


def test_an_architecture_keras_resnest_does_not_build(hub, reference, no_build):
    hub.repos["timm/resnet50d.a1_in1k"] = {"main": timm_files(reference, "resnet50d")}
    message = one_line_error(keras_resnest.create_model, "resnest50",
                             weights="hf://timm/resnet50d.a1_in1k")
    assert message.startswith("hf://timm/resnet50d.a1_in1k: config.json names an architecture "
                              "keras_resnest does not build; expected one of resnest101, ")
    assert message.endswith("resnest50d_4s2x40d; got 'resnet50d'")
    print(message)
    # A keras-hub preset (save_to_preset) is no timm checkpoint.
    keras_hub_config = b'{"registered_name": "x", "config": {}}'
    hub.repos["someone/preset"] = {"main": {"config.json": keras_hub_config}}
    message = one_line_error(keras_resnest.create_model, "resnest50", weights="hf://someone/preset")
    assert message == ("hf://someone/preset: config.json has no timm \"architecture\"; expected "
                       "a timm repository (config.json + model.safetensors); got the keys "
                       "['config', 'registered_name']")


def test_another_architecture_than_the_model_built(served, no_build):
    message = one_line_error(keras_resnest.create_model, "resnest101", weights=SPEC)
    assert message == (f"{SPEC}: the repository holds resnest14d (keras_resnest's resnest14d) but "
                       "the model being built is resnest101; expected a resnest101 repository "
                       "such as 'hf://timm/resnest101e.in1k'; got 'resnest14d'")
    message = one_line_error(keras_resnest.create_model, "resnest50_fast_1s1x64d", weights=SPEC)
    assert "expected a resnest50_fast_1s1x64d repository (resnest50_fast_1s1x64d is not on " \
           "the Hub); got 'resnest14d'" in message
    assert not served.requested("model.safetensors")


def test_train_checks_the_repository_before_building_the_model(served, monkeypatch, capsys,
                                                               tmp_path):
    from keras_resnest.commands.main import main
    from keras_resnest.training import finetune

    def build_classifier(*args, **kwargs):
        raise AssertionError("the model was built before the error")

    monkeypatch.setattr(finetune, "build_classifier", build_classifier)
    code = main(["train", "--model", "resnest101", "--weights", SPEC, "--dataset", "digits",
                 "-o", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "the model being built is resnest101" in lines[0]
    assert not served.requested("model.safetensors")


def test_train_in_python_takes_a_timm_alias_as_the_command_does(hub, monkeypatch, tmp_path):
    # "resnest50d" is timm's name of resnest50: the repository check sees the canonical name.
    from keras_resnest.training import finetune
    from keras_resnest.training.data import digits_data
    from keras_resnest.training.loop import TrainConfig, train

    built = []

    def build_classifier(model_name, **kwargs):
        built.append(model_name)
        raise AssertionError("built")

    monkeypatch.setattr(finetune, "build_classifier", build_classifier)
    hub.repos["timm/resnest50d.in1k"] = {"main": {"config.json": timm_config("resnest50d")}}
    config = TrainConfig(model_name="resnest50d", weights="hf://timm/resnest50d.in1k",
                         image_size=32, epochs=1, batch_size=16)
    with pytest.raises(AssertionError, match="built"):  # past the checks, at the build
        train(config, digits_data(32), str(tmp_path / "run"), log=lambda *a, **k: None)
    assert built == ["resnest50"]
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert record["model_name"] == "resnest50"


def test_predict_takes_hub_weights(served, capsys, tmp_path):
    from PIL import Image

    from keras_resnest.commands.main import main
    from keras_resnest.predict import load_images

    path = tmp_path / "image.png"
    Image.fromarray(ref.random_images(1, 80, 96, seed=3)[0].astype(np.uint8)).save(path)
    assert main(["predict", str(path), "--model", "resnest14d", "--weights", SPEC,
                 "--size", "64", "--top", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    model = keras_resnest.create_model("resnest14d", weights=SPEC, input_shape=(64, 64, 3))
    probabilities = model.predict(load_images([path], 64), verbose=0)[0]
    best = np.argsort(-probabilities, kind="stable")[:3]
    assert printed[0] == str(path)
    assert [float(line.split()[1]) for line in printed[1:]] == \
        [round(float(probabilities[i]), 4) for i in best]


def test_a_tensor_of_the_wrong_shape(hub, reference):
    state = dict(reference.state_dict())
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    hub.repos[REPO] = {"main": {"config.json": timm_config(),
                                "model.safetensors": safetensors.torch.save(state)}}
    message = one_line_error(keras_resnest.create_model, "resnest14d", weights=SPEC)
    assert message == (f"{SPEC}: model.safetensors does not fit resnest14d: Shape mismatch for "
                       "'layer1.0.conv1.weight': model 'resnest14d' expects (64, 64, 1, 1), the "
                       "state dict has (64, 64, 3, 3).")


@pytest.mark.slow  # huggingface_hub retries a refused connection for about 20 s
def test_an_unreachable_hub_without_a_cached_copy(hub, no_build):
    hub.stop()
    message = one_line_error(keras_resnest.create_model, "resnest14d", weights=SPEC)
    assert message.startswith(f"{SPEC}: cannot reach the Hub at {hub.url} and config.json of "
                              "this revision is not in the Hugging Face cache; expected a "
                              "connection (HF_ENDPOINT) or an earlier download; got ConnectError")
    print(message)


# --- weights="imagenet" offline ----------------------------------------------------------------

@pytest.fixture
def refusing_mirror(tmp_path, monkeypatch):
    """KERAS_RESNEST_WEIGHTS_URL on a port this test holds bound but not listening (every
    connection refused), and an empty Keras cache."""
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{refusing.getsockname()[1]}/weights"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(pretrained.MIRROR_ENV, url)
    yield url
    refusing.close()


def test_a_failed_imagenet_download_names_the_alternatives(refusing_mirror):
    with pytest.raises(pretrained.WeightsDownloadError) as caught:
        keras_resnest.ResNeSt14(weights="imagenet")
    assert str(caught.value) == (
        "weights='imagenet': downloading gluon_resnest14-9c8fe254.pth (resnest14d) failed; "
        "expected a reachable server, or weights='hf://timm/resnest14d.gluon_in1k' (timm's copy "
        "on the Hugging Face Hub) or KERAS_RESNEST_WEIGHTS_URL set to a mirror URL or a local "
        "directory holding gluon_resnest14-9c8fe254.pth; got URL fetch failure on "
        f"{refusing_mirror}/gluon_resnest14-9c8fe254.pth: None -- [Errno 111] Connection refused")
    assert caught.value.__suppress_context__
    with pytest.raises(pretrained.WeightsDownloadError) as caught:
        pretrained.fetch_checkpoint("resnest50_fast_1s1x64d")  # not on the Hub
    assert "hf://" not in str(caught.value)
    assert "failed; expected a reachable server, or KERAS_RESNEST_WEIGHTS_URL set to" in str(
        caught.value)


# --- keras-hub ---------------------------------------------------------------------------------

def test_keras_hub_loads_a_timm_repository(served, reference):
    from keras_resnest.hub import (
        ResNeStBackbone,
        ResNeStImageClassifier,
        ResNeStImageClassifierPreprocessor,
        ResNeStImageConverter,
    )

    assert ResNeStImageConverter.from_preset(SPEC).image_size == (224, 224)
    preprocessor = ResNeStImageClassifierPreprocessor.from_preset(SPEC)
    assert preprocessor.image_converter.image_size == (224, 224)
    backbone = ResNeStBackbone.from_preset(SPEC)
    images = ref.random_images(2, 64, 64, seed=3)
    normalised = ref.to_torch_input(images).numpy().transpose(0, 2, 3, 1)
    error = ref.relative_error(keras.ops.convert_to_numpy(backbone(normalised)),
                               ref.features(reference, images))
    print(f"ResNeStBackbone.from_preset(hf://) vs official: {error:.2e}")
    assert error <= HF_PARITY

    classifier = ResNeStImageClassifier.from_preset(SPEC)
    assert classifier.preprocessor.image_converter.image_size == (224, 224)
    inputs = keras.ops.convert_to_numpy(classifier.preprocessor(ref.random_images(1, 240, 300)))
    with torch.no_grad():
        expected = reference(torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())).numpy()
    error = ref.relative_error(keras.ops.convert_to_numpy(classifier(inputs)), expected)
    print(f"ResNeStImageClassifier.from_preset(hf://) vs official: {error:.2e}")
    assert error <= HF_PARITY


def test_a_shared_keras_hub_preset_loads_back_from_the_hub(hub, tmp_path):
    import keras_hub

    from keras_resnest.hub import (
        ResNeStBackbone,
        ResNeStImageClassifier,
        ResNeStImageClassifierPreprocessor,
        ResNeStImageConverter,
    )

    preprocessor = ResNeStImageClassifierPreprocessor(
        image_converter=ResNeStImageConverter(image_size=(48, 48)))
    classifier = ResNeStImageClassifier(ResNeStBackbone.from_model_name("resnest14d"),
                                        num_classes=3, preprocessor=preprocessor)
    classifier.output_dense.bias.assign([0.5, -0.25, 0.125])  # not the initial zeros
    classifier.save_to_preset(str(tmp_path / "preset"))
    hub.repos["someone/resnest14d-digits"] = {"main": directory_files(tmp_path / "preset")}
    images = ref.random_images(2, 60, 80, seed=4)

    def predictions(model):  # preprocessing and model, eagerly (predict compiles both)
        return keras.ops.convert_to_numpy(model(model.preprocessor(images), training=False))

    expected = predictions(classifier)
    for load in (ResNeStImageClassifier.from_preset,
                 keras_hub.models.ImageClassifier.from_preset):
        loaded = load("hf://someone/resnest14d-digits")
        assert type(loaded) is ResNeStImageClassifier
        np.testing.assert_array_equal(predictions(loaded), expected)


# --- the stand-in ----------------------------------------------------------------------------

def test_the_stand_in_answers_the_revision_lookup_as_the_hub_does(hub):
    import huggingface_hub
    from huggingface_hub.utils import RepositoryNotFoundError, RevisionNotFoundError

    hub.repos["someone/x"] = {"main": {"config.json": b"{}"}, "v1": {"a.json": b"[]"}}
    info = huggingface_hub.model_info("someone/x", revision="v1")
    assert info.sha == hub.commit("someone/x", "v1") != hub.commit("someone/x")
    assert [sibling.rfilename for sibling in info.siblings] == ["a.json"]
    assert huggingface_hub.file_exists("someone/x", "config.json")
    assert not huggingface_hub.file_exists("someone/x", "a.json")
    with pytest.raises(RevisionNotFoundError):
        huggingface_hub.model_info("someone/x", revision="v2")
    with pytest.raises(RepositoryNotFoundError):
        huggingface_hub.model_info("someone/y")


# --- documentation (the Hub table: tests/test_model_registry.py) -------------------------------

def test_docstring_examples():
    import doctest

    result = doctest.testmod(hf_hub)
    assert result.attempted > 0 and result.failed == 0
