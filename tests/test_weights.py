"""Pretrained weights, offline: torch-free checkpoint reading (both torch formats, safetensors,
npz), the pickle allow-list, `weights="imagenet"` against a local HTTP server (download, hash
check, conversion, cache), `weights=` paths, and the `convert` / `predict` commands.

Checkpoints are written here with the official reference package and random weights; a
served file is named `<model>-<sha256 prefix>.pth` like the official ones, and the model's
registry entry is pointed at it.
"""
import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

import keras_resnest
from keras_resnest.commands import main as cli
from keras_resnest.predict import load_images
from keras_resnest.weights import (
    CheckpointError,
    UnsafeCheckpointError,
    pretrained,
    read_state_dict,
)
from keras_resnest.weights.checkpoints import LazyTensor
from keras_resnest.weights.reference import official_eval_crop

from tests.helpers import torch_reference as ref

ROOT = Path(__file__).resolve().parents[1]


# --- helpers and fixtures ------------------------------------------------------------------

def torch_bytes(state, legacy=False):
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def reference_14d():
    return ref.build_randomized("resnest14d", seed=3)


@pytest.fixture(scope="module")
def reference_50():
    return ref.build_randomized("resnest50", seed=4)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        name = self.path.lstrip("/")
        self.server.requests.append(name)
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.cut.get(name):  # the connection drops half-way
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        else:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


class WeightsServer:
    """An HTTP server on 127.0.0.1 serving `files` (name -> bytes)."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files, self.httpd.cut, self.httpd.requests = {}, {}, []
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    files = property(lambda self: self.httpd.files)
    cut = property(lambda self: self.httpd.cut)
    requests = property(lambda self: self.httpd.requests)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = WeightsServer()
    yield served
    served.stop()


@pytest.fixture
def keras_home(tmp_path, monkeypatch, server):
    """An empty Keras cache (KERAS_HOME) and the mirror pointed at the local server."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv(pretrained.MIRROR_ENV, server.url)
    return home


def publish(server, monkeypatch, model_name, data, name=None):
    """Serves `data` as `<model>-<sha256 prefix>.pth` and registers it for `model_name`."""
    name = name or f"{model_name}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    server.files[f"weights/{name}"] = data
    monkeypatch.setitem(pretrained.PRETRAINED_FILES, model_name,
                        pretrained.PretrainedFile(name, "https://unreachable.invalid/"))
    return name


def cache_files(home):
    directory = home / "models"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def logits_model(name, **kwargs):
    return keras_resnest.create_model(name, classifier_activation=None, **kwargs)


# --- weights="imagenet" ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model_name,legacy", [("resnest14d", False), ("resnest14d", True),
                                               ("resnest50", True)])
def test_imagenet_weights_reproduce_reference_and_are_cached(
        model_name, legacy, server, keras_home, monkeypatch, request):
    reference = request.getfixturevalue("reference_50" if model_name == "resnest50"
                                        else "reference_14d")
    data = torch_bytes(reference.state_dict(), legacy=legacy)
    name = publish(server, monkeypatch, model_name, data)
    images = ref.random_images(2, 64, 72, seed=1)
    expected = ref.logits(reference, images)

    model = logits_model(model_name, weights="imagenet")
    assert ref.relative_error(model.predict(images, verbose=0), expected) <= ref.PARITY_TOLERANCE
    converted = name[:-len(".pth")] + ".weights.h5"
    assert cache_files(keras_home) == sorted([name, converted])
    assert server.requests == [f"weights/{name}"]

    # Second load: from the converted cache, with no server at all.
    server.stop()
    # A mirror that refuses every connection: a port this test holds bound but not listening
    # (no other process can listen there; port 9 may well have a listener).
    refusing = socket.socket()
    request.addfinalizer(refusing.close)
    refusing.bind(("127.0.0.1", 0))
    monkeypatch.setenv(pretrained.MIRROR_ENV,
                       f"http://127.0.0.1:{refusing.getsockname()[1]}/nothing-listens-here")
    again = logits_model(model_name, weights="imagenet")
    np.testing.assert_array_equal(again.predict(images, verbose=0),
                                  model.predict(images, verbose=0))
    if model_name == "resnest50":
        return
    # Backbone only: include_top=False and another class count load everything but the head.
    features = keras_resnest.create_model(model_name, weights="imagenet", include_top=False)
    assert ref.relative_error(features.predict(images, verbose=0),
                              ref.features(reference, images)) <= ref.PARITY_TOLERANCE
    ten = keras_resnest.create_model(model_name, weights="imagenet", classes=10)
    assert ten.get_layer("fc").kernel.shape == (2048, 10)
    np.testing.assert_array_equal(ten.get_layer("conv1_0").kernel.numpy(),
                                  model.get_layer("conv1_0").kernel.numpy())
    assert cache_files(keras_home) == sorted([name, converted])


def test_hash_mismatch_deletes_the_file_and_names_both_prefixes(
        server, keras_home, monkeypatch, reference_14d):
    data = torch_bytes(reference_14d.state_dict())
    found = hashlib.sha256(data).hexdigest()[:8]
    publish(server, monkeypatch, "resnest14d", data, name="resnest14d-deadbeef.pth")
    with pytest.raises(ValueError, match=rf"expected .*deadbeef, found {found}"):
        keras_resnest.ResNeSt14(weights="imagenet")
    assert cache_files(keras_home) == []


def test_truncated_downloads_leave_no_file(server, keras_home, monkeypatch, reference_14d):
    data = torch_bytes(reference_14d.state_dict())
    name = publish(server, monkeypatch, "resnest14d", data)
    # The server sends half of what it announced, then drops the connection.
    server.cut[f"weights/{name}"] = True
    with pytest.raises(Exception, match="URL fetch failure|retrieval incomplete"):
        keras_resnest.ResNeSt14(weights="imagenet")
    assert cache_files(keras_home) == []
    # The server sends a complete response of a truncated file: the hash catches it.
    server.cut.clear()
    server.files[f"weights/{name}"] = data[: len(data) // 2]
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        keras_resnest.ResNeSt14(weights="imagenet")
    assert cache_files(keras_home) == []


def test_interrupted_download_leaves_no_half_file(server, keras_home, monkeypatch, reference_14d):
    from keras.src.utils import file_utils

    publish(server, monkeypatch, "resnest14d", torch_bytes(reference_14d.state_dict()))

    def interrupted(url, filename, reporthook=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(file_utils, "urlretrieve", interrupted)
    with pytest.raises(KeyboardInterrupt):
        keras_resnest.ResNeSt14(weights="imagenet")
    assert cache_files(keras_home) == []


def test_damaged_cached_checkpoint_is_downloaded_again(server, keras_home, monkeypatch,
                                                       reference_14d):
    data = torch_bytes(reference_14d.state_dict())
    name = publish(server, monkeypatch, "resnest14d", data)
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / name).write_bytes(b"not the checkpoint")
    keras_resnest.ResNeSt14(weights="imagenet")
    assert (keras_home / "models" / name).read_bytes() == data


def test_local_directory_mirror_is_read_in_place(tmp_path, monkeypatch, reference_14d):
    """Air-gapped sites: KERAS_RESNEST_WEIGHTS_URL names a directory of official files."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = torch_bytes(reference_14d.state_dict(), legacy=True)
    name = f"resnest14d-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (mirror / name).write_bytes(data)
    monkeypatch.setitem(pretrained.PRETRAINED_FILES, "resnest14d",
                        pretrained.PretrainedFile(name, "https://unreachable.invalid/"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(pretrained.MIRROR_ENV, str(mirror))
    images = ref.random_images(1, 48, 48)
    model = logits_model("resnest14d", weights="imagenet")
    assert ref.relative_error(model.predict(images, verbose=0),
                              ref.logits(reference_14d, images)) <= ref.PARITY_TOLERANCE
    assert cache_files(tmp_path / "home") == [name[:-len(".pth")] + ".weights.h5"]


def test_registry_covers_every_model_with_official_weights():
    assert set(pretrained.PRETRAINED_FILES) == set(keras_resnest.list_models())
    entry = pretrained.PRETRAINED_FILES["resnest50"]
    assert entry.filename == "resnest50-528c19ca.pth" and entry.sha256_prefix == "528c19ca"
    assert pretrained.PRETRAINED_FILES["resnest14d"].filename == "gluon_resnest14-9c8fe254.pth"


# --- the pickle allow-list -----------------------------------------------------------------

class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload,global_name", [(_RunsShell, r"(posix|nt)\.system"),
                                                 (_RunsPython, r"builtins\.exec")])
@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_with_any_other_global_is_refused_before_it_runs(
        tmp_path, payload, global_name, legacy):
    marker = tmp_path / "it_ran"
    path = tmp_path / "evil.pth"
    state = {"conv1.0.weight": torch.zeros(32, 3, 3, 3), "bn1.weight": payload(marker)}
    path.write_bytes(torch_bytes(state, legacy=legacy))
    with pytest.raises(UnsafeCheckpointError, match=rf"global '{global_name}'"):
        read_state_dict(path)
    with pytest.raises(UnsafeCheckpointError, match="Nothing from the file was run"):
        keras_resnest.ResNeSt14(weights=str(path))
    assert not marker.exists()


def test_a_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Conv2d(3, 8, 3), path)
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.conv\.Conv2d"):
        read_state_dict(path)


def test_a_verified_download_is_still_unpickled_safely(tmp_path, server, keras_home,
                                                       monkeypatch):
    marker = tmp_path / "it_ran"
    publish(server, monkeypatch, "resnest14d", torch_bytes({"x": _RunsShell(marker)}))
    with pytest.raises(UnsafeCheckpointError):
        keras_resnest.ResNeSt14(weights="imagenet")
    assert not marker.exists()
    assert not any(name.endswith(".weights.h5") for name in cache_files(keras_home))


# --- reading checkpoints -----------------------------------------------------------------

def _tensor_zoo():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "float": torch.randn(3, 4, 5), "transposed": base.t(), "view": base[1:3, 2:5],
        "shared": base, "row": base[2], "half": torch.randn(5).half(),
        "bfloat16": torch.randn(7).bfloat16(), "double": torch.randn(3).double(),
        "int64": torch.arange(10), "scalar": torch.tensor(5), "bool": torch.tensor([True, False]),
        "uint8": torch.arange(4, dtype=torch.uint8), "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.randn(2, 2)),
    }


def _as_numpy(tensor):
    tensor = tensor.detach()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


@pytest.mark.parametrize("legacy", [False, True])
def test_both_torch_formats_read_every_dtype_and_layout(tmp_path, legacy):
    zoo = _tensor_zoo()
    path = tmp_path / "zoo.pth"
    path.write_bytes(torch_bytes({"state_dict": {**zoo, "bn.num_batches_tracked": torch.tensor(7)},
                                  "epoch": 3}, legacy=legacy))
    eager = read_state_dict(path)
    lazy = read_state_dict(path, lazy=True)
    assert sorted(eager) == sorted(zoo) == sorted(lazy)
    for key, tensor in zoo.items():
        expected = _as_numpy(tensor)
        assert eager[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(eager[key], expected, err_msg=key)
        assert isinstance(lazy[key], LazyTensor)
        assert (lazy[key].shape, lazy[key].dtype) == (expected.shape, expected.dtype)
        np.testing.assert_array_equal(np.asarray(lazy[key]), expected, err_msg=key)
    eager["float"][0] = 1.0  # arrays are ordinary, writable numpy arrays


def test_wrappers_and_data_parallel_prefix(tmp_path):
    weight = torch.randn(2, 3)
    for wrapped in ({"model": {"module.fc.weight": weight}},
                    {"state_dict": {"fc.weight": weight}, "optimizer": {"lr": 0.1}}):
        path = tmp_path / "wrapped.pt"
        path.write_bytes(torch_bytes(wrapped))
        np.testing.assert_array_equal(read_state_dict(path)["fc.weight"], weight.numpy())


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_or_foreign_files_raise_checkpoint_errors(tmp_path, legacy):
    data = torch_bytes({"w": torch.randn(1000)}, legacy=legacy)
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    path.write_bytes(b"just some text, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(path)


def test_safetensors_and_npz(tmp_path):
    import safetensors.torch

    zoo = {key: value.detach().contiguous() for key, value in _tensor_zoo().items()
           if value.is_contiguous() and key not in ("shared", "row")}
    safetensors.torch.save_file(zoo, str(tmp_path / "zoo.safetensors"))
    np.savez(tmp_path / "zoo.npz", **{k: _as_numpy(v) for k, v in zoo.items()})
    for name in ("zoo.safetensors", "zoo.npz"):
        state = read_state_dict(tmp_path / name)
        for key, tensor in zoo.items():
            np.testing.assert_array_equal(state[key], _as_numpy(tensor), err_msg=f"{name} {key}")
            assert state[key].dtype == _as_numpy(tensor).dtype


# --- weights= paths ------------------------------------------------------------------------

def test_a_checkpoint_of_another_architecture_names_the_first_mismatched_key(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnest101.pth"
    torch.save(ref.build_reference("resnest101").state_dict(), path)
    with pytest.raises(ValueError, match=r"'conv1\.0\.weight'.*expects \(32, 3, 3, 3\).*"
                                         r"has \(64, 3, 3, 3\)"):
        keras_resnest.ResNeSt50(weights=str(path))


@pytest.mark.slow
def test_safetensors_with_timm_names_convert_and_load(tmp_path, capsys):
    """timm's resnest50d_1s4x24d is the official resnest50_fast_1s4x24d (same keys)."""
    import safetensors.torch

    reference = ref.build_randomized("resnest50_fast_1s4x24d", seed=5)
    source = tmp_path / "resnest50d_1s4x24d.safetensors"
    safetensors.torch.save_file(reference.state_dict(), str(source))
    images = ref.random_images(1, 64, 64, seed=2)
    expected = ref.logits(reference, images)

    direct = logits_model("resnest50_fast_1s4x24d", weights=str(source))
    assert ref.relative_error(direct.predict(images, verbose=0), expected) <= ref.PARITY_TOLERANCE
    output = tmp_path / "converted.weights.h5"
    assert cli.main(["convert", str(source), "--model", "resnest50d_1s4x24d",
                     "-o", str(output)]) == 0
    assert "model       resnest50_fast_1s4x24d" in capsys.readouterr().out
    converted = logits_model("resnest50_fast_1s4x24d", weights=str(output))
    np.testing.assert_array_equal(converted.predict(images, verbose=0),
                                  direct.predict(images, verbose=0))


@pytest.mark.slow
def test_keras_files_npz_and_keras_round_trip(tmp_path, reference_14d):
    state = ref.state_dict_numpy(reference_14d)
    np.savez(tmp_path / "state.npz", **state)
    images = ref.random_images(2, 40, 56)
    model = logits_model("resnest14d", weights=str(tmp_path / "state.npz"))
    expected = model.predict(images, verbose=0)
    assert ref.relative_error(expected, ref.logits(reference_14d, images)) <= ref.PARITY_TOLERANCE

    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")
    for name in ("model.keras", "model.weights.h5"):
        again = logits_model("resnest14d", weights=str(tmp_path / name))
        np.testing.assert_array_equal(again.predict(images, verbose=0), expected)
    restored = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)


# --- commands ------------------------------------------------------------------------------

def test_convert_prints_the_report_and_checks_against_the_reference(tmp_path, capsys,
                                                                    reference_14d):
    source = tmp_path / "resnest14d-legacy.pth"
    source.write_bytes(torch_bytes(reference_14d.state_dict(), legacy=True))
    output = tmp_path / "out" / "resnest14d.weights.h5"
    assert cli.main(["convert", str(source), "--model", "resnest14d", "-o", str(output),
                     "--check"]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    parameters = sum(int(np.prod(v.shape)) for k, v in reference_14d.state_dict().items()
                     if not k.endswith("num_batches_tracked"))
    assert "tensors     129 mapped" in out
    assert f"parameters  {parameters:,} assigned" in out
    assert f"output      {output}" in out
    assert f"sha256      {digest}" in out
    assert ": OK" in out and "check       max|keras - torch| / max|torch|" in out
    assert [p.name for p in output.parent.iterdir()] == [output.name]  # no partial file left

    assert cli.main(["convert", str(source), "--model", "resnest14d", "-o",
                     str(tmp_path / "x.h5")]) == 2
    assert "must end with .weights.h5" in capsys.readouterr().err
    assert cli.main(["convert", str(source), "--model", "resnest51", "-o",
                     str(tmp_path / "x.weights.h5")]) == 2


def test_official_eval_crop_geometry():
    # 320x256, size 224: the crop is 224/256 of 256 = 224 pixels, at top 16 and left 48.
    from PIL import Image

    pixels = np.random.RandomState(0).randint(0, 256, (256, 320, 3), np.uint8)
    crop = official_eval_crop(Image.fromarray(pixels), 224)
    assert crop.dtype == np.float32 and crop.shape == (224, 224, 3)
    np.testing.assert_array_equal(crop, pixels[16:240, 48:272])


def test_predict_prints_top_classes(tmp_path, capsys, reference_14d):
    from PIL import Image

    source = tmp_path / "weights.pth"
    source.write_bytes(torch_bytes(reference_14d.state_dict()))
    pixels = np.random.RandomState(1).randint(0, 256, (180, 240, 3), np.uint8)
    image = tmp_path / "image.png"
    Image.fromarray(pixels).save(image)
    assert cli.main(["predict", str(image), str(image), "--model", "resnest14d",
                     "--weights", str(source), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[0] == lines[4] == str(image)

    model = keras_resnest.create_model("resnest14d", weights=str(source))
    probabilities = model.predict(load_images([image], 224), verbose=0)
    best = keras_resnest.decode_predictions(probabilities, top=1)[0][0]
    assert lines[1] == f"  1. {best[2]:.4f}  {best[1]} ({best[0]})"


# --- no torch at run time --------------------------------------------------------------------

@pytest.mark.slow
def test_no_torch_import_in_the_library_runtime_paths(tmp_path, reference_14d):
    """Reading, converting, weights= and weights="imagenet" with `import torch` blocked."""
    import safetensors.torch

    state = reference_14d.state_dict()
    (tmp_path / "zip.pth").write_bytes(torch_bytes(state))
    (tmp_path / "legacy.pth").write_bytes(torch_bytes(state, legacy=True))
    safetensors.torch.save_file(state, str(tmp_path / "st.safetensors"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = (tmp_path / "legacy.pth").read_bytes()
    name = f"resnest14d-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (mirror / name).write_bytes(data)
    keys = sum(not key.endswith("num_batches_tracked") for key in state)
    script = textwrap.dedent(f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("import torch is blocked")

        sys.meta_path.insert(0, BlockTorch())
        import keras_resnest
        from keras_resnest.commands import main as cli
        from keras_resnest.weights import pretrained, read_state_dict

        tmp = {str(tmp_path)!r}
        for name in ("zip.pth", "legacy.pth", "st.safetensors"):
            assert len(read_state_dict(f"{{tmp}}/{{name}}")) == {keys}
            keras_resnest.create_model("resnest14d", weights=f"{{tmp}}/{{name}}")
        pretrained.PRETRAINED_FILES["resnest14d"] = pretrained.PretrainedFile(
            {name!r}, "https://unreachable.invalid/")
        keras_resnest.ResNeSt14(weights="imagenet")
        assert cli.main(["convert", f"{{tmp}}/zip.pth", "--model", "resnest14d", "-o",
                         f"{{tmp}}/out.weights.h5"]) == 0
        # --check needs the reference: refused before converting, nothing written.
        assert cli.main(["convert", f"{{tmp}}/zip.pth", "--model", "resnest14d", "-o",
                         f"{{tmp}}/checked.weights.h5", "--check"]) == 2
        import os
        assert not os.path.exists(f"{{tmp}}/checked.weights.h5")
        assert "torch" not in sys.modules, "torch was imported"
        print("TORCH-FREE")
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_HOME=str(tmp_path / "home"),
               **{pretrained.MIRROR_ENV: str(mirror)})
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TORCH-FREE" in result.stdout
    assert ('keras-resnest convert: error: --check needs torch and the official resnest '
            'package: pip install "keras-resnest[reference]"') in result.stderr


TORCH_IMPORT = re.compile(r"^\s*(import|from)\s+torch\b", re.MULTILINE)


# Modules allowed to import torch: the test-only reference, and the PyTorch backend's kernels
# (imported only when Keras runs on torch, where the user has torch already).
TORCH_MODULES = ("keras_resnest/weights/reference.py", "keras_resnest/layers/torch_nhwc.py")
# An import of the module itself at a module's top level (backend_paths imports it indented,
# on the torch backend only, and the layers take the name from there).
TOP_LEVEL_TORCH_NHWC = re.compile(
    r"^(import\s+keras_resnest\.layers\.torch_nhwc|from\s+keras_resnest\.layers\.torch_nhwc\s"
    r"|from\s+keras_resnest\.layers\s+import\s.*\btorch_nhwc\b)", re.MULTILINE)


def test_only_the_reference_module_mentions_torch_imports():
    offenders = []
    for path in list((ROOT / "keras_resnest").rglob("*.py")) + \
            list((ROOT / "export").rglob("*.py")) + list((ROOT / "training").rglob("*.py")):
        if str(path.relative_to(ROOT)) in TORCH_MODULES:
            continue
        text = path.read_text()
        # torch_nhwc only inside a function (indented), never at a module's top level.
        if TOP_LEVEL_TORCH_NHWC.search(text):
            offenders.append(str(path.relative_to(ROOT)) + " imports torch_nhwc at top level")
        # A real import statement, not a name that starts with "torch".
        if TORCH_IMPORT.search(text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
