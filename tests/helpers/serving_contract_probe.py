"""What TF-Serving does with an exported model, done in a process without keras/keras_resnest.

Usage: python -S serving_contract_probe.py PACKAGES VERSION_DIR INPUTS.npz RESULT_DIR

Run by tests/test_export_serving.py in a fresh interpreter started with `-S` (no site-packages,
no .pth files, so no editable keras_resnest) whose only package directory is PACKAGES: the
test's copy of site-packages without keras, tf_keras and keras_resnest. Keras cannot even be
imported, as on a TF-Serving machine. It imports only TensorFlow, the tensorflow-serving-api
protos and numpy, then:

1. loads the SavedModel with `tf.saved_model.load` and calls each signature on the inputs
   (`image` float batch, `image_bytes_<i>` encoded files as uint8 arrays) -> RESULT_DIR/outputs.npz;
2. runs `saved_model_cli show --all` and parses the signatures it prints;
3. replays every PredictionLog of `assets.extra/tf_serving_warmup_requests` through its
   signature, with the tensors decoded from the protos;
4. scans saved_model.pb: every op must be a registered TF op or a function of the library
   (no custom op), and nothing may carry `_XlaMustCompile=true`;
5. sends a decompression bomb (a ~0.2 MB PNG of 15000x15000 pixels) to `serving_bytes`: the
   refusal, the growth of the process's peak memory, and a normal request served after it;
6. records which of keras / keras_resnest ended up in sys.modules.
Everything except the outputs goes to RESULT_DIR/report.json; the test makes the assertions.
"""
import json
import re
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])

import numpy as np  # noqa: E402  (the package directory must be on sys.path first)
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
from tensorflow_serving.apis import prediction_log_pb2


def call_signatures(model, inputs):
    outputs = {}
    float_out = model.signatures["serving_default"](image=tf.constant(inputs["image"]))
    # Encoded files travel as uint8 arrays (fixed-width bytes arrays would drop trailing NULs).
    files = [inputs[key].tobytes() for key in sorted(inputs) if key.startswith("image_bytes_")]
    bytes_out = model.signatures["serving_bytes"](image_bytes=tf.constant(files))
    for prefix, result in (("float", float_out), ("bytes", bytes_out)):
        for name, value in result.items():
            value = value.numpy()
            # String outputs as unicode arrays: np.load(allow_pickle=False) refuses objects.
            outputs[f"{prefix}/{name}"] = value.astype(str) if value.dtype == object else value
    return outputs


def parse_saved_model_cli(version_dir, packages):
    # `saved_model_cli show --all --dir VERSION_DIR`, in the same keras-free environment.
    command = (f"import sys; sys.path.insert(0, {str(packages)!r}); "
               "from tensorflow.python.tools.saved_model_cli import main; sys.exit(main())")
    text = subprocess.run(
        [sys.executable, "-S", "-c", command, "show", "--all", "--dir", str(version_dir)],
        check=True, capture_output=True, text=True,
    ).stdout
    signatures = {}
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        name = block.split("'", 1)[0]
        inputs_part, _, outputs_part = block.partition(
            "The given SavedModel SignatureDef contains the following output(s):"
        )
        method = re.search(r"Method name is: (\S+)", block)

        def tensors(part):
            found = {}
            for key, dtype, shape in re.findall(
                r"\['([^']+)'\] tensor_info:\s*\n\s*dtype: (\S+)\s*\n\s*shape: (\([^)]*\))", part
            ):
                found[key] = {"dtype": dtype, "shape": shape}
            return found

        signatures[name] = {
            "inputs": tensors(inputs_part),
            "outputs": tensors(outputs_part),
            "method": method.group(1) if method else None,
        }
    return signatures


def replay_warmup(model, version_dir):
    path = Path(version_dir) / "assets.extra" / "tf_serving_warmup_requests"
    replays = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        signature = model.signatures[request.model_spec.signature_name]
        arguments = {
            name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()
        }
        result = signature(**arguments)
        replays.append(
            {
                "model_name": request.model_spec.name,
                "signature": request.model_spec.signature_name,
                "inputs": sorted(arguments),
                "outputs": {name: list(value.shape) for name, value in result.items()},
                "finite": bool(np.all(np.isfinite(result["probabilities"].numpy()))),
            }
        )
    return replays


def scan_graph(version_dir):
    proto = saved_model_pb2.SavedModel.FromString(
        (Path(version_dir) / "saved_model.pb").read_bytes()
    )
    ops, xla_functions, unknown = set(), [], set()
    for meta_graph in proto.meta_graphs:
        library = meta_graph.graph_def.library
        function_names = {f.signature.name for f in library.function}
        node_lists = [meta_graph.graph_def.node] + [f.node_def for f in library.function]
        for function in library.function:
            attr = function.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                xla_functions.append(function.signature.name)
        for nodes in node_lists:
            for node in nodes:
                ops.add(node.op)
                attr = node.attr.get("_XlaMustCompile")
                if attr is not None and attr.b:
                    xla_functions.append(node.name)
                if node.op not in function_names and op_def_registry.get(node.op) is None:
                    unknown.add(node.op)
    return {
        "ops": sorted(ops),
        "xla_must_compile": xla_functions,
        "unregistered_ops": sorted(unknown),
    }


def png_bomb(side):
    """A valid 8-bit grey PNG of side x side black pixels: a few hundred kilobytes of zlib."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def peak_memory_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def refuse_bomb(model, inputs):
    bomb = png_bomb(15000)
    before = peak_memory_mb()
    try:
        model.signatures["serving_bytes"](image_bytes=tf.constant([bomb]))
        refusal = None
    except tf.errors.InvalidArgumentError as error:
        refusal = error.message
    growth = peak_memory_mb() - before
    normal = inputs["image_bytes_0"].tobytes()
    after = model.signatures["serving_bytes"](image_bytes=tf.constant([normal]))
    return {
        "bomb_bytes": len(bomb),
        "refusal": refusal,
        "peak_memory_growth_mb": growth,
        "serves_after": bool(np.all(np.isfinite(after["probabilities"].numpy()))),
        "max_pixels": int(model.max_pixels[0].numpy()),
    }


def keras_importable():
    try:
        import keras  # noqa: F401
    except ImportError:
        return False
    return True


def main(packages, version_dir, inputs_path, result_dir):
    result_dir = Path(result_dir)
    inputs = np.load(inputs_path, allow_pickle=False)
    model = tf.saved_model.load(version_dir)
    np.savez(result_dir / "outputs.npz", **call_signatures(model, inputs))
    report = {
        "signature_keys": sorted(model.signatures),
        "saved_model_cli": parse_saved_model_cli(version_dir, packages),
        "warmup": replay_warmup(model, version_dir),
        "graph": scan_graph(version_dir),
        "bomb": refuse_bomb(model, inputs),
        "labels_asset": (Path(version_dir) / "assets" / "labels.txt").read_text().splitlines(),
        "imported_keras": sorted(
            m for m in sys.modules if m.split(".")[0] in ("keras", "keras_resnest", "tf_keras")
        ),
        "keras_importable": keras_importable(),
    }
    (result_dir / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:5])
