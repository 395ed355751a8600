"""Packaging for keras-resnest.

`export/` and `training/` live at the repository root (the client's layout) but are installed
as `keras_resnest.export` and `keras_resnest.training`, so no generic top-level names land in
site-packages.
"""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
TF_VERSION = "2.21.*"

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
        "keras_resnest.export",
        "keras_resnest.training",
    ],
    package_dir={
        "keras_resnest": "keras_resnest",
        "keras_resnest.export": "export",
        "keras_resnest.training": "training",
    },
    package_data={"keras_resnest": ["data/*.json"]},
    # TensorFlow itself comes from an extra: CPU and GPU users need different distributions
    # and pip cannot replace one with the other.
    install_requires=["keras>=3.9,<3.16", "numpy>=1.23", "h5py", "pillow", "tqdm"],
    extras_require={
        "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "litert": ["ai-edge-litert>=2.1"],
        # tensorflow-cpu does not bring TensorBoard, which the training logs are written for.
        "training": ["scikit-learn", "tensorboard"],
        "safetensors": ["safetensors"],
        # The numerical reference (torch==2.13.0 CPU and resnest==0.0.5) is installed by the
        # Makefile: resnest must go in with --no-deps, which an extra cannot express.
        "test": [
            f"tensorflow-cpu=={TF_VERSION}",
            "pytest",
            "torch==2.13.0",
            "scikit-learn",
            "tensorboard",
            "safetensors",
            "ai-edge-litert>=2.1",
        ],
    },
    entry_points={"console_scripts": ["keras-resnest=keras_resnest.cli:main"]},
)
