"""`keras-resnest export` and `keras-resnest serve-request`.

    keras-resnest export --model resnest50 --format serving --version 1 -o models/
    keras-resnest export --model resnest50 --format tflite --quantize int8 \\
        --calibration calib_images/ --report-images heldout/ -o resnest50_int8.tflite
    keras-resnest export --model resnest50 --format onnx -o resnest50.onnx
    keras-resnest serve-request --model-name resnest50 cat.jpg dog.png

TensorFlow is imported inside the handlers so `keras-resnest --help` stays fast.
"""
import json
from pathlib import Path

FORMATS = ("saved_model", "serving", "tflite", "onnx")
QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
# Report images used when no folder is given (fp32/fp16/dynamic without --calibration).
RANDOM_REPORT_IMAGES = 8


def register(subparsers):
    export = subparsers.add_parser(
        "export",
        help="export a model as a SavedModel, a TF-Serving package, a TFLite or an ONNX file",
        description="Export a ResNeSt model (or a fine-tuned .keras model) for deployment.",
    )
    export.add_argument("--model", default="resnest50", help="model name (default resnest50)")
    export.add_argument(
        "--weights", default="imagenet",
        help="'imagenet', 'none' (random), a weights file, or a fine-tuned .keras model",
    )
    # No argparse `choices` for these two: the messages below name the valid values and keep
    # the same wording as the Python API.
    export.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    export.add_argument(
        "--quantize", default="none",
        help=f"TFLite: one of {', '.join(QUANTIZE_MODES)}; ONNX: none or int8"
    )
    export.add_argument("--calibration", type=Path, help="image folder for int8 calibration")
    export.add_argument(
        "--num-calibration", type=int, default=100, help="calibration images used (default 100)"
    )
    export.add_argument(
        "--report-images", type=Path,
        help="held-out image folder for the TFLite/ONNX report (default: the calibration folder)",
    )
    export.add_argument(
        "--int8-io", choices=("uint8", "int8"), default="uint8",
        help="input/output type of int8 models (default uint8)",
    )
    export.add_argument("--image-size", type=int, help="input size (default: the model's crop)")
    export.add_argument("--version", default="1", help="TF-Serving version number (default 1)")
    export.add_argument(
        "--name", help="TF-Serving model name, the one serve-request's --model-name asks for "
        "(default: the Keras model's name: resnest50 for --model resnest50, "
        "resnest50_classifier for a model from train)")
    export.add_argument(
        "--labels", type=Path,
        help="class names: a text file, one per line, or a JSON list such as the "
        "class_names.json of train (default: class_names.json beside a .keras model, else "
        "ImageNet names for 1000 classes, else 0..N-1)",
    )
    export.add_argument(
        "--max-pixels", type=int, default=None,
        help="saved_model/serving: serving_bytes refuses larger images before decoding them "
        "(default 50000000)",
    )
    export.add_argument("-o", "--output", type=Path, required=True, help="output path")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output")
    export.add_argument(
        "--report-json", type=Path, help="also write the TFLite/ONNX report as JSON"
    )
    export.set_defaults(func=run_export)

    request = subparsers.add_parser(
        "serve-request",
        help="classify images with a model running in TensorFlow Serving",
        description="Send images to the serving_bytes signature of a TF-Serving model.",
    )
    request.add_argument("images", nargs="+", type=Path, help="JPEG/PNG files")
    request.add_argument("--model-name", default="resnest50", help="served model name")
    request.add_argument("--host", default="localhost")
    request.add_argument("--port", type=int, help="default 8500 (gRPC) or 8501 (REST)")
    request.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    request.set_defaults(func=run_serve_request)


def check_export_arguments(args):
    """Validate flag combinations before any model is built or file written."""
    if args.format not in FORMATS:
        raise ValueError(f"unknown format {args.format!r}; expected one of {', '.join(FORMATS)}")
    if args.quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"unknown quantize mode {args.quantize!r}; expected one of {', '.join(QUANTIZE_MODES)}"
        )
    quantize_aware = _quantize_aware_file(args)
    if quantize_aware and (args.format, args.quantize) != ("tflite", "int8"):
        raise ValueError(
            f"--weights {args.weights} is a quantization-aware model (train "
            "--qat-epochs): it exports as --format tflite --quantize int8 only; "
            "for other formats export the float model of the same run "
            "(RUN_DIR/model.keras)"
        )
    if args.format not in ("tflite", "onnx") and args.quantize != "none":
        raise ValueError(f"--quantize applies to --format tflite and onnx, not {args.format}")
    if args.format == "onnx":
        from keras_resnest.export.onnx_export import check_onnx_installed, check_quantize_mode

        check_quantize_mode(args.quantize)
        check_onnx_installed(args.quantize)
    if args.quantize == "int8" and args.calibration is None and not quantize_aware:
        raise ValueError(
            f"--format {args.format} --quantize int8 needs --calibration DIR (a "
            "folder of images), unless --weights is a quantization-aware .keras "
            "model (train --qat-epochs)"
        )
    if args.max_pixels is not None:
        if args.format in ("tflite", "onnx"):
            raise ValueError(
                "--max-pixels applies to --format saved_model and serving (their "
                f"serving_bytes signature), not {args.format}"
            )
        from keras_resnest.export.saved_model import check_max_pixels

        check_max_pixels(args.max_pixels)
    if args.labels is not None and args.format in ("tflite", "onnx"):
        # Only the SavedModel graphs carry class names (their `labels` output).
        raise ValueError(f"--labels applies to --format saved_model and serving, not "
                         f"{args.format}")
    if args.format == "serving":
        from keras_resnest.export.serving import check_version

        check_version(args.version)
    from keras_resnest.models.configs import resolve_model_name

    resolve_model_name(args.model)  # the same names and message as every other command


def _quantize_aware_file(args):
    """A QAT .keras model (train --qat-epochs) carries its int8 ranges: no calibration needed."""
    from keras_resnest.quantization import is_quantize_aware_file

    return is_quantize_aware_file(getattr(args, "weights", None))


def output_target(args):
    """The path the export will create (for serving, the version directory), or None if it
    depends on the loaded model (a serving export of an unreadable `.keras` file)."""
    if args.format != "serving":
        return args.output
    from keras_resnest.export.serving import version_directory
    from keras_resnest.model_source import model_name_before_loading

    name = args.name or model_name_before_loading(args.model, args.weights)
    return None if name is None else version_directory(args.output, name, args.version)


def run_export(args):
    check_export_arguments(args)
    from keras_resnest.export import calibration, output_paths

    # Fail on a taken output or bad image folders before the (slow) model build or download.
    target = output_target(args)
    if target is not None:
        output_paths.refuse_existing(target, args.overwrite)
    for folder in (args.calibration, args.report_images):
        if folder is not None:
            calibration.check_images(folder)

    from keras_resnest.model_source import load_model_for_export

    labels, labels_source = export_labels(args)
    model = load_model_for_export(args.model, args.weights, args.image_size)
    if labels is not None:
        print(f"class names from {labels_source}")
    from keras_resnest.images import DEFAULT_MAX_PIXELS

    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if args.format == "saved_model":
        from keras_resnest.export.saved_model import export_saved_model

        path = export_saved_model(
            model, args.output, labels=labels, overwrite=args.overwrite, max_pixels=max_pixels
        )
        print(f"SavedModel written to {path} (signatures serving_default, serving_bytes)")
    elif args.format == "serving":
        from keras_resnest.export.serving import export_serving_package

        name = args.name or model.name
        path = export_serving_package(
            model,
            args.output,
            name,
            args.version,
            labels=labels,
            overwrite=args.overwrite,
            max_pixels=max_pixels,
        )
        print(f"TF-Serving model written to {path}; configs in {args.output}")
    elif args.format == "onnx":
        export_onnx(model, args)
    else:
        export_tflite(model, args)
    return 0


def read_labels_file(path):
    """Class names from `--labels`: a JSON list (train's class_names.json) or plain text, one
    name a line."""
    from keras_resnest.labels import read_labels

    path = Path(path)
    if path.suffix.lower() != ".json":
        return read_labels(path)
    if not path.is_file():
        raise FileNotFoundError(f"--labels {path}: no such file")
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"--labels {path}: expected a JSON list of class names; got a file "
                         f"that is not JSON ({error})") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"--labels {path}: expected a JSON list of class names (strings); got "
                         f"{type(names).__name__}")
    return names


def export_labels(args):
    """(class names, where from): --labels, else the class_names.json that train wrote beside
    a .keras model (so a fine-tuned model exports with its classes), else (None, None): the
    export then names 1000 classes by ImageNet and others 0..N-1."""
    from keras_resnest.labels import class_names_beside
    from keras_resnest.model_source import is_keras_model_file

    if args.format not in ("saved_model", "serving"):
        return None, None
    if args.labels is not None:
        return read_labels_file(args.labels), f"--labels {args.labels}"
    if is_keras_model_file(args.weights):
        return class_names_beside(args.weights)
    return None, None


def export_tflite(model, args):
    from keras_resnest import classifier
    from keras_resnest.export import output_paths, report, tflite

    image_size = classifier.resolve_image_size(model, None)
    calibration_images = _calibration_images(args, image_size)
    flatbuffer = tflite.convert_to_tflite(
        model,
        args.quantize,
        calibration_data=calibration_images,
        int8_io=args.int8_io,
    )
    output_paths.write_file_atomically(args.output, flatbuffer, overwrite=args.overwrite)
    print(f"TFLite model ({args.quantize}) written to {args.output}")
    images, source = _report_images(args, image_size, calibration_images)
    result = report.tflite_report(flatbuffer, model, images, progress=True)
    _print_report(args, result, f"TFLite {args.quantize} vs Keras on {source}")


def export_onnx(model, args):
    from keras_resnest import classifier
    from keras_resnest.export import onnx_export, output_paths, report

    image_size = classifier.resolve_image_size(model, None)
    calibration_images = _calibration_images(args, image_size)
    print(
        f"converting {model.name} to ONNX (opset {onnx_export.OPSET}"
        f"{', int8 calibration' if args.quantize == 'int8' else ''})..."
    )
    onnx_bytes = onnx_export.convert_to_onnx(model, args.quantize, calibration_images)
    output_paths.write_file_atomically(args.output, onnx_bytes, overwrite=args.overwrite)
    print(
        f"ONNX model ({'float32' if args.quantize == 'none' else args.quantize}) written to "
        f"{args.output}"
    )
    images, source = _report_images(args, image_size, calibration_images)
    result = report.onnx_report(onnx_bytes, model, images, progress=True)
    _print_report(args, result, f"ONNX {args.quantize} (onnxruntime) vs Keras on {source}")


def _calibration_images(args, image_size):
    """The --calibration folder's images at the export size, or None."""
    from keras_resnest.export import calibration

    if args.calibration is None:
        return None
    return calibration.load_image_folder(
        args.calibration, image_size, limit=args.num_calibration, progress=True
    )


def _report_images(args, image_size, calibration_images):
    """Images for the export report, and where they came from."""
    import numpy as np

    from keras_resnest.export import calibration

    if args.report_images is not None:
        return (
            calibration.load_image_folder(args.report_images, image_size, progress=True),
            f"held-out folder {args.report_images}",
        )
    if calibration_images is not None:
        return calibration_images, f"calibration folder {args.calibration}"
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (RANDOM_REPORT_IMAGES, image_size, image_size, 3))
    return (
        images.astype("float32"),
        f"{RANDOM_REPORT_IMAGES} random images (pass --report-images DIR for real ones)",
    )


def _print_report(args, result, title):
    from keras_resnest.export import output_paths, report

    print(report.format_report(result, title=title))
    if args.report_json is not None:
        output_paths.write_file_atomically(args.report_json, json.dumps(result, indent=2))


def run_serve_request(args):
    from keras_resnest.export import client

    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such image file: {', '.join(missing)}")
    images = [p.read_bytes() for p in args.images]
    try:
        predictions = _request(client, args, images)
    except Exception as error:  # grpc.RpcError, urllib's URLError: no server, wrong model...
        raise ValueError(
            f"the TF-Serving request failed (model {args.model_name!r} at {args.host}:"
            f"{args.port or (8501 if args.rest else 8500)}); expected a server there "
            f"serving that name (export --name); got {_request_error(error)}") from None
    print(client.format_predictions(args.images, predictions))
    return 0


def _request_error(error):
    """One line for a failed request: gRPC's status and details (its str() spans lines)."""
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {' '.join(str(details()).split())}"
    return " ".join(str(error).split())


def _request(client, args, images):
    if args.rest:
        import numpy as np

        url = f"http://{args.host}:{args.port or 8501}"
        rows = client.rest_predict(url, args.model_name, images)
        return {name: np.array([row[name] for row in rows]) for name in ("labels", "scores")}
    return client.grpc_predict(f"{args.host}:{args.port or 8500}", args.model_name, images)
