"""`keras-resnest export`: end to end, and its refusals of bad input (clear error, nothing written).

Includes the int8 accuracy test: a ResNeSt-14d trained on real images (the digits),
saved as a fine-tuned `.keras` model, exported with `--quantize int8` calibrated on one image
folder and reported on a held-out one.
"""
import contextlib
import io
import json
import re
import socket
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from keras_resnest.commands import main as cli

from tests.helpers import export_helpers as helpers
from tests.helpers import scratch


def run(argv, capsys=None):
    """`keras-resnest ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    # The command assembler with just this area's subcommands: these tests exercise export,
    # independently of the other areas' command modules.
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        patch.setattr(cli, "COMMAND_MODULES", ("keras_resnest.commands.export",))
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """The trained digits model as a .keras file, a calibration and a held-out image folder."""
    with scratch.module_folder(tmp_path_factory, "digits") as root:
        model = helpers.digits_model()
        model.save(root / "digits.keras")
        train_images, _, test_images, test_labels = helpers.digits_split()
        helpers.write_digit_folder(root / "calibration", train_images[:100])
        helpers.write_digit_folder(root / "heldout", test_images)
        yield root, test_labels


@pytest.fixture(scope="module")
def int8_export(digits_files):
    root, _ = digits_files
    code, out, err = run(
        ["export", "--weights", root / "digits.keras", "--format", "tflite", "--quantize", "int8",
         "--calibration", root / "calibration", "--report-images", root / "heldout",
         "--report-json", root / "report.json", "-o", root / "digits_int8.tflite"])
    assert code == 0, err
    return out


@pytest.mark.slow
def test_int8_export_of_a_fine_tuned_model_on_real_images(digits_files, int8_export):
    root, test_labels = digits_files
    out = int8_export
    result = json.loads((root / "report.json").read_text())
    print(result)  # the measured figures, shown with pytest -s
    assert result["num_images"] == len(test_labels)
    assert result["top1_agreement"] >= 0.98
    assert result["input_dtype"] == "uint8"
    assert result["size_bytes"] == (root / "digits_int8.tflite").stat().st_size
    assert "top-1 agreement" in out and "held-out folder" in out and "XNNPACK, 2 threads" in out


@pytest.mark.slow
def test_onnx_float_and_int8_exports_of_a_fine_tuned_model(digits_files, tmp_path):
    """Both ONNX exports of the fine-tuned digits model, with the reports the CLI prints."""
    import onnx

    root, test_labels = digits_files
    code, out, err = run(["export", "--weights", root / "digits.keras", "--format", "onnx",
                          "--report-images", root / "heldout", "--report-json",
                          tmp_path / "float.json", "-o", tmp_path / "digits.onnx"])
    assert code == 0, err
    float_result = json.loads((tmp_path / "float.json").read_text())
    assert float_result["max_rel_logit_diff"] <= 1e-5, float_result
    assert float_result["top1_agreement"] == 1.0
    assert "onnxruntime, 2 threads" in out and "ONNX none (onnxruntime) vs Keras" in out

    code, out, err = run(["export", "--weights", root / "digits.keras", "--format", "onnx",
                          "--quantize", "int8", "--calibration", root / "calibration",
                          "--report-images", root / "heldout", "--report-json",
                          tmp_path / "int8.json", "-o", tmp_path / "digits_int8.onnx"])
    assert code == 0, err
    result = json.loads((tmp_path / "int8.json").read_text())
    print({"float": float_result, "int8": result})  # figures for the closing note (pytest -s)
    assert result["num_images"] == len(test_labels)
    assert result["top1_agreement"] >= 0.98, result
    # int8 weights: about a quarter of the float file.
    assert result["size_bytes"] < 0.35 * float_result["size_bytes"], (result, float_result)
    ops = {node.op_type for node in onnx.load(tmp_path / "digits_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


@pytest.mark.slow
def test_keras_file_with_another_image_size_is_refused(digits_files, capsys):
    root, _ = digits_files
    code, _, err = run(["export", "--weights", root / "digits.keras", "--image-size", "64",
                        "--format", "saved_model", "-o", root / "sm"], capsys)
    assert code == 2 and "built for 32x32" in err
    assert not (root / "sm").exists()


@pytest.mark.slow
def test_serving_export_and_existing_version(tmp_path, capsys):
    argv = ["export", "--model", "resnest14d", "--weights", "none", "--image-size", "64",
            "--format", "serving", "--version", "3", "-o", tmp_path]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    version_dir = tmp_path / "resnest14d" / "3"
    assert (version_dir / "assets.extra" / "tf_serving_warmup_requests").is_file()
    stamp = (version_dir / "saved_model.pb").stat().st_mtime_ns

    code, _, err = run(argv, capsys)
    assert code == 2 and "already exists and is not empty" in err and "--overwrite" in err
    assert (version_dir / "saved_model.pb").stat().st_mtime_ns == stamp

    code, _, err = run(argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert (version_dir / "saved_model.pb").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "batching.config", "models.config", "resnest14d"]


@pytest.mark.slow
def test_saved_model_export(tmp_path, capsys):
    code, _, err = run(["export", "--model", "resnest14d", "--weights", "none", "--image-size",
                        "64", "--format", "saved_model", "--max-pixels", "6000",
                        "-o", tmp_path / "sm"], capsys)
    assert code == 0, err
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert sorted(loaded.signatures) == ["serving_bytes", "serving_default"]
    # The pixel limit set at export is in the SavedModel and holds at its edge.
    assert int(loaded.max_pixels[0].numpy()) == 6000
    serve = loaded.signatures["serving_bytes"]
    at_limit = helpers.encode(helpers.natural_image(60, 100, 0), "PNG")
    assert serve(image_bytes=tf.constant([at_limit]))["probabilities"].shape == (1, 1000)
    over = helpers.encode(helpers.natural_image(61, 100, 0), "JPEG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="61 x 100 pixels is over the limit"):
        serve(image_bytes=tf.constant([at_limit, over]))


@pytest.mark.slow
def test_dynamic_tflite_report_without_folders_says_so(tmp_path, capsys):
    code, out, err = run(["export", "--model", "resnest14d", "--weights", "none",
                          "--image-size", "64", "--format", "tflite", "--quantize", "dynamic",
                          "-o", tmp_path / "m.tflite"], capsys)
    assert code == 0, err
    assert "random images" in out and "top-1 agreement" in out
    assert (tmp_path / "m.tflite").read_bytes()[4:8] == b"TFL3"


def make_folders(tmp_path):
    good = helpers.write_digit_folder(tmp_path / "good", helpers.digits_split()[0][:2])
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return good, empty, broken


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--format", "coreml"],
            "unknown format 'coreml'; expected one of saved_model, serving, tflite, onnx",
        ),
        (
            ["--format", "tflite", "--quantize", "int4"],
            "unknown quantize mode 'int4'; expected one of",
        ),
        (
            ["--format", "serving", "--quantize", "fp16"],
            "--quantize applies to --format tflite and onnx",
        ),
        (
            ["--format", "onnx", "--quantize", "fp16"],
            "ONNX export supports quantize modes none, int8; got 'fp16'",
        ),
        (
            ["--format", "onnx", "--quantize", "int8"],
            "--format onnx --quantize int8 needs --calibration DIR",
        ),
        (["--format", "onnx", "--max-pixels", "1000"], "--max-pixels applies to .* not onnx"),
        (
            ["--format", "tflite", "--quantize", "int8"],
            "--format tflite --quantize int8 needs --calibration DIR",
        ),
        (
            ["--format", "tflite", "--quantize", "int8", "--calibration", "{tmp}/missing"],
            "missing does not exist",
        ),
        (
            ["--format", "tflite", "--quantize", "int8", "--calibration", "{tmp}/empty"],
            "contains no images",
        ),
        (
            ["--format", "tflite", "--quantize", "int8", "--calibration", "{tmp}/broken"],
            "none of its 1 image files can be read \\(zz_broken.png: cannot decode",
        ),
        (["--format", "tflite", "--report-images", "{tmp}/empty"], "contains no images"),
        (["--format", "serving", "--version", "latest"], "version must be a positive integer"),
        (
            ["--format", "serving", "--max-pixels", "0"],
            "max_pixels must be a positive whole number",
        ),
        (
            ["--format", "tflite", "--max-pixels", "1000"],
            "--max-pixels applies to --format saved_model",
        ),
        (["--format", "tflite", "--model", "resnet50"], "unknown model 'resnet50'"),
    ],
)
def test_bad_input_is_refused_and_nothing_written(tmp_path, capsys, extra, message):
    make_folders(tmp_path)
    output = tmp_path / "out"
    argv = [
        "export",
        "--model",
        "resnest14d",
        "--weights",
        "none",
        "--image-size",
        "32",
        "-o",
        output,
    ] + [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code, _, err = run(argv, capsys)
    assert code == 2
    # The last line (a progress bar may come before it) is the one-line error.
    assert err.strip().splitlines()[-1].split("\r")[-1].startswith("keras-resnest export: error:")
    assert re.search(message, err), err
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_existing_tflite_file_is_refused(tmp_path, capsys):
    output = tmp_path / "m.tflite"
    output.write_bytes(b"keep me")
    code, _, err = run(
        [
            "export",
            "--model",
            "resnest14d",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--format",
            "tflite",
            "-o",
            output,
        ],
        capsys,
    )
    assert code == 2 and "already exists" in err
    assert output.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    "fmt, model, taken",
    [
        ("saved_model", "resnest14d", "."),
        ("serving", "resnest14d", "resnest14d/1"),
        ("serving", "resnest50d", "resnest50/1"),  # an alias: the model is named after resnest50
        ("serving", "{keras}", "my_classifier/1"),  # a .keras model: the name saved in it
    ],
)
def test_existing_output_is_refused_before_the_model_is_built(
    tmp_path, monkeypatch, fmt, model, taken
):
    from keras_resnest import model_source

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built (or downloaded) before the output was checked")

    monkeypatch.setattr(model_source, "load_model_for_export", no_build)
    keras_file = tmp_path / "fine_tuned.keras"  # only its config.json is read
    with zipfile.ZipFile(keras_file, "w") as archive:
        archive.writestr("config.json", json.dumps({"config": {"name": "my_classifier"}}))
    output = tmp_path / "out"
    (output / taken).mkdir(parents=True)
    (output / taken / "keep.txt").write_text("keep me")
    weights = ["--weights", keras_file] if model == "{keras}" else ["--model", model]
    code, out, err = run(["export", *weights, "--format", fmt, "-o", output])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "already exists and is not empty" in err, err
    assert (output / taken / "keep.txt").read_text() == "keep me"


def test_serve_request_without_a_server_fails_clearly(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(helpers.encode(helpers.natural_image(40, 40, 0), "PNG"))
    # A port that refuses for sure: bound here but not listening, so no other process can
    # listen on it (port 9 may well have a listener, and the result would depend on it).
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        for transport in (["--rest"], []):  # REST (urllib), then gRPC
            code, _, err = run(
                ["serve-request", *transport, "--host", "127.0.0.1", "--port", port, image], capsys
            )
            assert code == 2 and "the TF-Serving request failed" in err, err
            assert re.search("connection refused|failed to connect", err, re.IGNORECASE), err
    code, _, err = run(["serve-request", tmp_path / "nope.jpg"], capsys)
    assert code == 2 and "no such image file" in err


@pytest.mark.slow
def test_int8_figures_against_true_labels(digits_files, int8_export):
    """Accuracy of the float and int8 models on the held-out digits (reported, and sane)."""
    from keras_resnest.export import calibration, report

    root, test_labels = digits_files
    flatbuffer = (root / "digits_int8.tflite").read_bytes()
    images = calibration.load_image_folder(root / "heldout", 32)
    runner = report.TFLiteClassifier(flatbuffer)
    int8_top1 = np.array([runner(image)["logits"].argmax() for image in images])
    float_top1 = helpers.digits_model().predict(images, verbose=0).argmax(-1)
    float_accuracy = float(np.mean(float_top1 == test_labels))
    int8_accuracy = float(np.mean(int8_top1 == test_labels))
    print({"float_accuracy": float_accuracy, "int8_accuracy": int8_accuracy})
    assert float_accuracy >= 0.9
    assert int8_accuracy >= float_accuracy - 0.02


def test_size_free_keras_file_is_built_for_the_export_size(tmp_path):
    import keras_resnest
    from keras_resnest.model_source import load_model_for_export

    model = keras_resnest.create_model("resnest14d", weights=None, classes=3)
    model.save(tmp_path / "free.keras")
    fixed = load_model_for_export("ignored", str(tmp_path / "free.keras"), image_size=64)
    assert fixed.input_shape == (None, 64, 64, 3)
    images = np.stack([helpers.natural_image(64, 64, seed) for seed in range(2)]).astype("float32")
    np.testing.assert_array_equal(
        fixed.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def test_commands_are_registered_in_the_keras_resnest_command():
    from keras_resnest.commands import export as export_cli

    parser = cli.build_parser()  # every area's modules, as the installed command has them
    args = parser.parse_args(["export", "--format", "tflite", "-o", "m.tflite"])
    assert args.func is export_cli.run_export and args.quantize == "none"
    args = parser.parse_args(["serve-request", "cat.jpg"])
    assert args.func is export_cli.run_serve_request and args.model_name == "resnest50"


@pytest.mark.slow
def test_labels_file_for_a_fine_tuned_model(digits_files, tmp_path):
    root, _ = digits_files
    names = [f"digit {i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    base = ["export", "--weights", root / "digits.keras", "--format", "saved_model"]
    code, _, err = run(base + ["--labels", tmp_path / "labels.txt", "-o", tmp_path / "sm"])
    assert code == 0, err
    assert (tmp_path / "sm" / "assets" / "labels.txt").read_text().splitlines() == names
    served = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](
        image=tf.constant(helpers.digits_split()[2][:1])
    )
    assert served["labels"].numpy()[0, 0].decode() == names[served["classes"].numpy()[0, 0]]

    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    code, _, err = run(base + ["--labels", tmp_path / "three.txt", "-o", tmp_path / "sm2"])
    assert code == 2 and "got 3 labels for a model with 10 classes" in err
    assert not (tmp_path / "sm2").exists()
