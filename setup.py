"""Packaging for keras-resnest.

`export/` and `training/` live at the repository root (the client's layout) but are installed
as `keras_resnest.export` and `keras_resnest.training`, and so does `commands/` (the command
line, which imports them all) as `keras_resnest.commands`: no generic top-level names land in
site-packages.
"""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
TF_VERSION = "2.21.*"
KERAS_HUB = "keras-hub>=0.32,<0.33"  # tested with 0.32.0 (needs keras >= 3.15)
# Tested with onnx 1.23.2, onnxruntime 1.32.0, tf2onnx 1.17.0 and openvino 2026.4.1.
# sympy: onnxruntime's int8 quantization preprocessing imports it, and onnxruntime does not
# install it.
ONNX = ["onnx>=1.16", "onnxruntime>=1.20", "tf2onnx>=1.17", "sympy"]
OPENVINO = "openvino>=2025.0"
# `predict-batch` (keras_resnest.beam): Beam's RunInference. It brings pyarrow (the Parquet
# output), caps protobuf below 7 (6 here) and needs pillow 12.
BEAM = "apache-beam>=2.77,<3"
# What Beam's gcs and s3 filesystems import (gs:// and s3:// paths), with Beam's own pins, not
# the whole apache-beam[gcp,aws] extras (BigQuery, AI Platform, Spanner, ... ): google-cloud-
# storage (gcsio), google-auth-httplib2 (Beam's GCP credentials: without it Beam connects
# anonymously) and boto3 (s3io). About 38 MB installed, 24 MB of it botocore.
BEAM_STORES = ["google-cloud-storage>=3.0.0,<4", "google-auth-httplib2>=0.1.0,<0.3.0",
               "boto3>=1.9,<2"]
# The object stores of the predict-batch tests, on 127.0.0.1: a GCS emulator and moto's S3
# server. Tested with gcp-storage-emulator 2026.7.19 and moto 5.2.6.
STORE_EMULATORS = ["gcp-storage-emulator", "moto[server]>=5"]
# The documentation site (`make docs`, tests/test_docs.py). Tested with mkdocs 1.6.1,
# mkdocs-material 9.8.2, mkdocstrings 1.0.8 and mkdocstrings-python 2.0.11.
DOCS = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=1.0,<2"]

setup(
    name="keras-resnest",
    version="0.1.0",
    description="ResNeSt (Split-Attention Networks) for Keras 3 / TensorFlow, numerically "
    "identical to the official PyTorch models",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "keras_resnest",
        "keras_resnest.layers",
        "keras_resnest.models",
        "keras_resnest.weights",
        "keras_resnest.weights.checkpoints",
        "keras_resnest.hub",
        "keras_resnest.beam",
        "keras_resnest.export",
        "keras_resnest.training",
        "keras_resnest.commands",
    ],
    package_dir={
        "keras_resnest": "keras_resnest",
        "keras_resnest.export": "export",
        "keras_resnest.training": "training",
        "keras_resnest.commands": "commands",
    },
    package_data={"keras_resnest": ["data/*.json"]},
    # Every command in the README works after a plain `pip install keras-resnest`. The full
    # `tensorflow` distribution is the Linux CPU build as well, and the clients we need
    # (tensorflow-serving-api, tf-keras, keras-hub's tensorflow-text) pin it: basing on
    # `tensorflow-cpu` would leave them installable only with --no-deps.
    install_requires=[
        f"tensorflow=={TF_VERSION}",
        "keras>=3.9,<3.16",
        "numpy>=1.23",
        "h5py",
        "pillow",
        "tqdm",
        # `train --dataset digits` (the demo's data) and TensorBoard logs during training.
        "scikit-learn",
        "tensorboard",
        # `export --format serving` (warm-up records) and `serve-request` (gRPC client).
        f"tensorflow-serving-api=={TF_VERSION}",
        # `export --format tflite` checks each .tflite file it writes with the LiteRT interpreter.
        "ai-edge-litert>=2.1",
        # `convert` reads .safetensors checkpoints.
        "safetensors",
        # weights="hf://...": timm's checkpoints on the Hugging Face Hub, fetched with its own
        # client (cache, HF_ENDPOINT, tokens, offline mode); keras-hub's hf:// presets use it
        # too. Tested with 2.4.0.
        "huggingface_hub>=0.30",
    ],
    extras_require={
        # Bundled CUDA libraries for NVIDIA GPUs: `pip install "keras-resnest[gpu]"`.
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        # The official PyTorch model, for `keras-resnest convert --check` only: heavy, and never
        # imported by anything else.
        "reference": ["torch>=2.0", "resnest==0.0.5"],
        # keras_resnest.hub: the keras-hub backbone, classifier and presets.
        "hub": [KERAS_HUB],
        # `export --format onnx` (tf2onnx), its parity report and int8 quantizer (onnxruntime).
        "onnx": ONNX,
        # Running the ONNX export in OpenVINO.
        "openvino": [OPENVINO],
        # `keras-resnest predict-batch`: batch prediction on Apache Beam, with files on the
        # local disk, in Cloud Storage (gs://) or S3 (s3://).
        "beam": [BEAM, *BEAM_STORES],
        # `make docs`: the MkDocs site with its API reference.
        "docs": DOCS,
        # The suite: pytest (and pytest-xdist: `make test` runs two workers), the reference with
        # torch pinned to the CPU wheel it is measured on, jax for the backend tests and
        # keras-hub for keras_resnest.hub, the ONNX exporter, OpenVINO and Beam; ruff for
        # tests/test_lint.py; the documentation tools for tests/test_docs.py; the object
        # stores of predict-batch's gs:// and s3:// tests.
        "test": ["pytest", "pytest-xdist>=3.8", "torch==2.13.0", "resnest==0.0.5",
                 "jax[cpu]>=0.10.2,<0.11", KERAS_HUB, *ONNX, OPENVINO, BEAM, *BEAM_STORES,
                 "ruff>=0.17,<1", *DOCS, *STORE_EMULATORS],
    },
    # Outside the package, so that `keras-resnest --help` does not import Keras.
    py_modules=["keras_resnest_cli"],
    entry_points={"console_scripts": ["keras-resnest=keras_resnest_cli:main"]},
)
